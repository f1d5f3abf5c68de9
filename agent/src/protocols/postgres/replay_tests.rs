//! Replays recorded PostgreSQL conversations from `protocols/testdata/postgres_*.conv` against
//! their golden `*.expected` files (format, blessing and the byte-wise check: see the MySQL
//! replay tests, whose machinery this shares).

use super::Postgres;
use crate::protocols::mysql::replay_tests::check_conversations;

#[test]
fn recorded_postgres_conversations_match_golden_results() {
    check_conversations("postgres_", &Postgres, 8);
}
