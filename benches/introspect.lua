-- wrk script: POST /v1/introspect with a random token from a file.
--   wrk ... -s benches/introspect.lua URL -- TOKENS_FILE CREDENTIAL
local tokens = {}
local auth = ""

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  auth = "Bearer " .. args[2]
  math.randomseed(os.time() + #tokens)
end

function request()
  local t = tokens[math.random(#tokens)]
  return wrk.format("POST", "/v1/introspect",
    {["Content-Type"] = "application/json", ["Authorization"] = auth},
    '{"token":"' .. t .. '"}')
end
