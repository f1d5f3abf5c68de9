//! Replays recorded PostgreSQL conversations from `protocols/testdata/postgres_*.conv` against
//! their golden `*.expected` files (format, blessing and the byte-wise check: see
//! `protocols::replay`).

use super::Postgres;
use crate::protocols::replay::check_conversations;

#[test]
fn recorded_postgres_conversations_match_golden_results() {
    check_conversations("postgres_", &Postgres, 8);
}
