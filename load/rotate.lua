-- wrk script: MCP tools/list POSTs, each with the next bearer token from TOKENS_FILE (one per line),
-- so every request may come from a different user.
-- The requests are built once per thread in init: building one per request in Lua made wrk's own
-- garbage collection (a live heap of 10,000 token strings) show up as the proxy's p99.
local body = '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
local requests = {}
local i = 0

function init(args)
  for token in io.lines(os.getenv("TOKENS_FILE")) do
    requests[#requests + 1] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
      ["Authorization"] = "Bearer " .. token,
    }, body)
  end
  i = math.random(#requests)
end

request = function()
  i = i % #requests + 1
  return requests[i]
end
