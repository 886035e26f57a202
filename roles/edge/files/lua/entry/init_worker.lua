-- init_worker entry point: seed the per-worker PRNG (DNS query ids), flush metrics.
require("cdnctl.node").init_worker()
