-- route entry point for requests with If-None-Match, which decides alone (RFC 9110
-- §13.2.2): without If-Modified-Since, nginx's not-modified filter looks at the ETag only.
ngx.req.clear_header("If-Modified-Since")
require("cdnctl.router").route()
