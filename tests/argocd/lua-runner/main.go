// Command argocd-lua runs an Argo CD resource customization script on one Kubernetes object the
// way Argo CD runs it, for tests/cluster/argocd_lua.rs:
//
//	argocd-lua health    SCRIPT_FILE < object.json   prints {"status": ..., "message": ...}
//	argocd-lua discovery SCRIPT_FILE < object.json   prints the names of the offered actions
//	argocd-lua action    SCRIPT_FILE < object.json   prints the JSON merge patch Argo CD would send
//
// The conventions, as in Argo CD's util/lua (v3) for scripts from argocd-cm (without
// `useOpenLibs`): gopher-lua (a Lua 5.1) with only the package, base and table libraries, and
// `os.time` and `os.date` only through `require("os")` (there is no global `os`); a one-second
// limit; the object as the global `obj`, every JSON number a Lua number (the API server's
// integers arrive as int64); the script's returned table encoded with layeh.com/gopher-json. A
// health status outside Argo CD's six is reported as Unknown, as Argo CD does. An action's
// returned object is compared with the live one into a JSON merge patch
// (github.com/evanphx/json-patch, Argo CD's library), after putting back empty objects that
// Lua turned into empty arrays; that patch is what Argo CD sends to the API server.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	jsonpatch "github.com/evanphx/json-patch"
	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua health|discovery|action SCRIPT_FILE < object.json")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-lua:", err)
		os.Exit(1)
	}
}

func run(mode, scriptFile string, in io.Reader, out io.Writer) error {
	script, err := os.ReadFile(scriptFile)
	if err != nil {
		return err
	}
	live, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	obj, err := decodeObject(live)
	if err != nil {
		return fmt.Errorf("the object: %w", err)
	}
	result, err := runScript(obj, string(script))
	if err != nil {
		return err
	}
	var answer []byte
	switch mode {
	case "health":
		answer, err = health(result)
	case "discovery":
		answer, err = discovery(result)
	case "action":
		answer, err = action(live, obj, result)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", answer)
	return err
}

// decodeObject reads JSON as Kubernetes' unstructured objects hold it: integers as int64, other
// numbers as float64.
func decodeObject(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, err
	}
	return numbersAsKubernetes(obj).(map[string]any), nil
}

func numbersAsKubernetes(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = numbersAsKubernetes(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = numbersAsKubernetes(x[k])
		}
	}
	return v
}

// runScript runs the script in a state set up as Argo CD's, and returns its result encoded as
// JSON.
func runScript(obj map[string]any, script string) ([]byte, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOsAsArgoCD},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(l.SetFuncs(l.NewTable(), safeOsFuncs()))
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	return luajson.Encode(ret)
}

// safeOsFuncs are gopher-lua's own os.time and os.date, taken from its os library opened in a
// throwaway state: nothing that reads files, runs programs or exits.
func safeOsFuncs() map[string]lua.LGFunction {
	tmp := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer tmp.Close()
	tmp.Push(tmp.NewFunction(lua.OpenOs))
	tmp.Call(0, 1)
	funcs := map[string]lua.LGFunction{}
	if full, ok := tmp.Get(-1).(*lua.LTable); ok {
		for _, name := range []string{"time", "date"} {
			if f, ok := full.RawGetString(name).(*lua.LFunction); ok && f.GFunction != nil {
				funcs[name] = f.GFunction
			}
		}
	}
	return funcs
}

// openSafeOsAsArgoCD does what Argo CD's OpenSafeOs does: it registers the safe functions under
// the table library's name, and since that library is already loaded, gopher-lua's
// RegisterModule returns it unchanged. So no global `os` exists: a script reaches os.time and
// os.date with `local os = require("os")`, as Argo CD's own example in argocd-cm.yaml writes.
func openSafeOsAsArgoCD(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.TabLibName, safeOsFuncs()))
	return 1
}

func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case bool:
		return lua.LBool(x)
	case int64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		t := l.CreateTable(len(x), 0)
		for _, item := range x {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(x))
		for k, item := range x {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

var healthStatuses = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

func health(result []byte) ([]byte, error) {
	var hs struct {
		Status  string `json:"status"`
		Message string `json:"message,omitempty"`
	}
	if err := json.Unmarshal(result, &hs); err != nil {
		return nil, fmt.Errorf("health result %s: %w", result, err)
	}
	if !healthStatuses[hs.Status] {
		hs.Status, hs.Message = "Unknown", "Lua returned an invalid health status"
	}
	return json.Marshal(hs)
}

func discovery(result []byte) ([]byte, error) {
	names := []string{}
	if string(result) != "[]" { // an empty Lua table encodes as an empty array: no actions
		var actions map[string]any
		if err := json.Unmarshal(result, &actions); err != nil {
			return nil, fmt.Errorf("discovery result %s: %w", result, err)
		}
		for name := range actions {
			names = append(names, name)
		}
		sort.Strings(names)
	}
	return json.Marshal(names)
}

func action(live []byte, liveObj map[string]any, result []byte) ([]byte, error) {
	if len(result) > 0 && result[0] == '[' {
		return nil, errors.New("a list of impacted resources (new-style action output) is not supported here")
	}
	var newObj map[string]any
	if err := json.Unmarshal(result, &newObj); err != nil {
		return nil, fmt.Errorf("action result %s: %w", result, err)
	}
	newObj = restoreEmptyObjects(newObj, liveObj)
	updated, err := json.Marshal(newObj)
	if err != nil {
		return nil, err
	}
	return jsonpatch.CreateMergePatch(live, updated)
}

// restoreEmptyObjects puts back the empty objects of the live object that came back from Lua as
// empty arrays (Lua has one table type, and an empty table encodes as []).
func restoreEmptyObjects(updated, live map[string]any) map[string]any {
	for k, newValue := range updated {
		switch nv := newValue.(type) {
		case map[string]any:
			if lv, ok := live[k].(map[string]any); ok {
				updated[k] = restoreEmptyObjects(nv, lv)
			}
		case []any:
			if lv, ok := live[k].(map[string]any); ok && len(nv) == 0 {
				updated[k] = lv
			}
		}
	}
	return updated
}
