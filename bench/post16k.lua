-- wrk script for SCENARIO=post16k in bench/run.sh: every request is a POST of a 16 KiB body.
-- The upstream reads and drops the body and answers its usual 1 KiB.
wrk.method = "POST"
wrk.body = string.rep("x", 16384)
wrk.headers["Content-Type"] = "application/octet-stream"
