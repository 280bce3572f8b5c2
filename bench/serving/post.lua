-- wrk POST script for bench/serving.py: the body is the file named by $BODY; $AUTH_KEY, when set,
-- goes in `Authorization: Bearer <key>` (a cible endpoint with auth_mode key).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
local key = os.getenv("AUTH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
