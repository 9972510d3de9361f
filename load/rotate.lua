-- wrk script: MCP tools/list POSTs, each with the next bearer token from TOKENS_FILE (one per line),
-- so every request may come from a different user.
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
local body = '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
local i = math.random(#tokens)
request = function()
  i = i % #tokens + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["Authorization"] = "Bearer " .. tokens[i],
  }, body)
end
