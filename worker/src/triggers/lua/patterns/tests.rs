use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mlua::Lua;

use super::{install, Bounds, Deadline};

/// A state with Lua's own functions kept as `native.find`, ... and
/// these installed in `string`, with `limit` from now on.
fn lua_with_both(limit: Duration) -> Lua {
    let lua = Lua::new();
    lua.load(
        "native = { find = string.find, match = string.match, gmatch = string.gmatch, gsub = string.gsub }",
    )
    .exec()
    .unwrap();
    let deadline: Deadline = Rc::new(Cell::new(Some(Instant::now() + limit)));
    install(
        &lua,
        Bounds {
            deadline,
            time_limit: limit,
            memory_limit: 1 << 20,
        },
    )
    .unwrap();
    lua
}

/// Every call gives what Lua's own gives: the same values, or an error
/// with the same message.
#[test]
fn results_and_errors_are_lua_s_own() {
    let lua = lua_with_both(Duration::from_secs(60));
    let mismatches: Vec<String> = lua
        .load(
            r##"
local function show(ok, ...)
local parts = { tostring(ok) }
for i = 1, select("#", ...) do
    local v = select(i, ...)
    -- Lua cannot name a function called through pcall ('?'); these
    -- name themselves.
    parts[#parts + 1] = math.type(v) or type(v) == "string" and ("%q"):format(v:gsub("to '%?'", "to '*'")
                                                                          :gsub("to '%a+'", "to '*'"))
                        or type(v)
end
return table.concat(parts, ",")
end
local function gmatch_all(gmatch, ...)
local out = {}
for a, b, c in gmatch(...) do out[#out + 1] = show(true, a, b, c) end
return table.concat(out, ";")
end
local subjects = { "", "hello world", "  key = value  ", "THE (quick) [brown] fox", "a.b.c",
               "x = 1, y = 22, z = 333", "f(a(b)c)d", "THE\0nul", "aaa", "%d" }
local patterns = { "", "o", "l+", "^h", "d$", "^$", "(o)(r)", "()ll()", "%a+", "%A+", "%s*(%S+)%s*",
               "[%w_]+", "[^%s]+", "[a-c]", "[]]", "[^]]", "%b()", "%f[%w]%w+", "%f[%W]", "(%w+)%s*=%s*(%w+)",
               ".-", ".-b", "a*", "a-", "a?a?a", "(a)%1", "((a)(a))", "%d+", "[%d%.]+", "%u%l", "%x",
               "%z", "%p", "%c", "%g+", "[%a-]", "[a-]", "[-a]", "(.)%1", "%", "[a", "(()", "%1", ")",
               "%bx", "%f", "%fx", "(a", "%g", "[", "[^", "x%", "%0" }
local bad = {}
local function check(what, a, b)
if a ~= b then bad[#bad + 1] = what .. "\n  native: " .. a .. "\n  ours:   " .. b end
end
for _, s in ipairs(subjects) do
for _, p in ipairs(patterns) do
    for _, init in ipairs({ 1, 2, -3, 0, 100 }) do
        local label = ("%q %q %d"):format(s, p, init)
        check("find " .. label, show(pcall(native.find, s, p, init)), show(pcall(string.find, s, p, init)))
        check("find plain " .. label, show(pcall(native.find, s, p, init, true)),
              show(pcall(string.find, s, p, init, true)))
        check("match " .. label, show(pcall(native.match, s, p, init)), show(pcall(string.match, s, p, init)))
        check("gmatch " .. label, show(pcall(gmatch_all, native.gmatch, s, p, init)),
              show(pcall(gmatch_all, string.gmatch, s, p, init)))
    end
    for _, repl in ipairs({ "<%0>", "%2-%1", "%%", "", "%", "%x", 7,
                            { o = "0", l = false, hello = 1.5 },
                            function(a, b) if a == "l" then return nil end return a .. (b or "") end,
                            function() return {} end }) do
        for _, n in ipairs({ 1, 2, 100 }) do
            local label = ("%q %q %s %d"):format(s, p, tostring(repl), n)
            check("gsub " .. label, show(pcall(native.gsub, s, p, repl, n)), show(pcall(string.gsub, s, p, repl, n)))
        end
        check("gsub all", show(pcall(native.gsub, s, p, repl)), show(pcall(string.gsub, s, p, repl)))
    end
end
end
for _, args in ipairs({ {}, { "a" }, { nil, "a" }, { 12, 2 }, { "a", "a", 1.5 }, { "a", "a", "x" },
                    { "a", "a", "2" }, { {}, "a" } }) do
for _, name in ipairs({ "find", "match", "gmatch" }) do
    check(name .. " args", show(pcall(native[name], table.unpack(args, 1, 3))),
          show(pcall(string[name], table.unpack(args, 1, 3))))
end
check("gsub args", show(pcall(native.gsub, table.unpack(args, 1, 3))), show(pcall(string.gsub, table.unpack(args, 1, 3))))
end
check("method", show(("hello"):find("l")), show(native.find("hello", "l")))
check("deep", show(pcall(string.find, ("a"):rep(300), ("(a)"):rep(33))), show(pcall(native.find, ("a"):rep(300), ("(a)"):rep(33))))
check("too complex", show(pcall(string.match, ("a"):rep(300), ("a?"):rep(250))),
  show(pcall(native.match, ("a"):rep(300), ("a?"):rep(250))))
return bad
"##,
        )
        .eval()
        .unwrap();
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
}

#[test]
fn a_catastrophic_pattern_stops_at_the_deadline() {
    let lua = lua_with_both(Duration::from_millis(300));
    let started = Instant::now();
    let error = lua
        .load(r#"return select(2, pcall(string.find, ("a"):rep(40), ("a-"):rep(40) .. "b"))"#)
        .eval::<String>()
        .unwrap();
    assert!(
        error.contains("time limit exceeded (0.3 s) in string.find"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A plain search that would take minutes is bounded too.
    let error = lua
        .load(r#"return select(2, pcall(string.find, ("a"):rep(1e6), ("a"):rep(5e5) .. "b", 1, true))"#)
        .eval::<String>()
        .unwrap();
    assert!(error.contains("time limit exceeded"), "{error}");
}

#[test]
fn gsub_s_result_is_bounded_by_the_memory_limit() {
    let lua = lua_with_both(Duration::from_secs(60));
    let error = lua
        .load(r#"return select(2, pcall(string.gsub, ("a"):rep(1e4), ".", ("b"):rep(1000)))"#)
        .eval::<String>()
        .unwrap();
    assert!(error.contains("not enough memory"), "{error}");
}
