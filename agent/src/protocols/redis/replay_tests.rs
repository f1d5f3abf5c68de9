//! Replays recorded Redis conversations from `protocols/testdata/redis_*.conv` against their
//! golden `*.expected` files (format and blessing: see the MySQL replay tests).

use super::Redis;
use crate::protocols::mysql::replay_tests::check_conversations;

#[test]
fn recorded_redis_conversations_match_golden_results() {
    check_conversations("redis_", &Redis, 6);
}
