-- wrk script for the post16k scenario of bench/run.sh: every request is a POST of a 16 KiB body
-- to /post, where the upstream NGINX reads and discards the body and answers "ok\n".
wrk.method = "POST"
wrk.path = "/post"
wrk.body = string.rep("x", 16384)
wrk.headers["Content-Type"] = "application/octet-stream"
