-- wrk script: every request is a POST with the same JSON body.
-- The body comes from BENCH_WRK_BODY; headers (Authorization, MD-Version) are passed with -H.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_WRK_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
