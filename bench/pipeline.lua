-- wrk script for the pipeline scenario of bench/run.sh (fastgw only): POST /post with a 1 KiB
-- body, alternating a static bearer token and an HS256 JWT from one request to the next, so
-- both authentication paths are measured in one run. run.sh puts the two credentials in
-- BENCH_STATIC_TOKEN and BENCH_JWT.
local body = string.rep("x", 1024)
local requests = {}
local n = 0

init = function(args)
   for _, name in ipairs({ "BENCH_STATIC_TOKEN", "BENCH_JWT" }) do
      local credential = os.getenv(name)
      if credential == nil or credential == "" then
         error("pipeline.lua: " .. name .. " is not set")
      end
      local headers = {
         ["Authorization"] = "Bearer " .. credential,
         ["Content-Type"] = "application/octet-stream",
      }
      table.insert(requests, wrk.format("POST", nil, headers, body))
   end
end

request = function()
   n = n + 1
   return requests[n % #requests + 1]
end
