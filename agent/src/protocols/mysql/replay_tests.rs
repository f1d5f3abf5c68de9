//! Replays recorded MySQL/MariaDB conversations from `protocols/testdata/mysql_*.conv` against
//! their golden `*.expected` files (format, blessing and the byte-wise check: see
//! `protocols::replay`).

use super::Mysql;
use crate::protocols::replay::check_conversations;

#[test]
fn recorded_mysql_conversations_match_golden_results() {
    check_conversations("mysql_", &Mysql, 5);
}
