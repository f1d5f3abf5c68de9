//! Replays recorded Redis conversations from `protocols/testdata/redis_*.conv` against their
//! golden `*.expected` files (format, blessing and the byte-wise check: see
//! `protocols::replay`).

use super::Redis;
use crate::protocols::replay::check_conversations;

#[test]
fn recorded_redis_conversations_match_golden_results() {
    check_conversations("redis_", &Redis, 6);
}
