-- wrk script: POST /admin/oauth2/introspect (Ory Hydra) with a random token from a file, as a
-- form (RFC 7662 section 2.1). The same shape of load as benches/introspect.lua on loop-store.
--   wrk ... -s benches/introspect_hydra.lua URL -- TOKENS_FILE
local tokens = {}

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  math.randomseed(os.time() + #tokens)
end

function request()
  local t = tokens[math.random(#tokens)]
  return wrk.format("POST", "/admin/oauth2/introspect",
    {["Content-Type"] = "application/x-www-form-urlencoded"},
    "token=" .. t)
end
