//! SQL text helpers shared by the SQL protocols (stub: being written).

/// Replace literals (strings, numbers) with `?`.
pub fn sanitize(sql: &str) -> String {
    sql.to_owned()
}

/// The operation (first keyword, upper-cased) and the table it works on, where simple.
pub fn summarize(_sql: &str) -> (Option<String>, Option<String>) {
    (None, None)
}
