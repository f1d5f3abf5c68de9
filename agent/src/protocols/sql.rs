//! SQL text helpers shared by the SQL protocols (PostgreSQL, MySQL/MariaDB) and the span stage.
//!
//! Both work on a small lexer that knows the literal and quoting syntaxes of both dialects:
//! `'…'` strings (with `''` and, to stay on the safe side for MySQL, `\'` escapes), prefixed
//! strings (`E'…'`, `X'…'`, `B'…'`, `N'…'`, `U&'…'`, `_utf8mb4'…'`), dollar quoting
//! (`$$…$$`, `$tag$…$tag$`), `"…"` quoted identifiers, `` `…` `` backquoted identifiers,
//! `--` and (nested) `/* */` comments, numbers including hex/octal/binary forms.
//! Neither function panics or allocates more than a bounded amount, whatever the input.

/// Longest text `sanitize` returns, in bytes.
pub const MAX_SANITIZED_LEN: usize = 4096;
/// Longest collection name `summarize` returns, in bytes.
const MAX_NAME_LEN: usize = 256;
/// Paren nesting that `sanitize` tracks for its context rules; deeper levels are still copied.
const MAX_TRACKED_DEPTH: usize = 64;

/// Replace literals (strings, numbers, hex/bit strings) with `?`, drop comments, collapse
/// whitespace runs to one space and `IN (?, ?, …)` lists to `IN (?)`. Identifiers, keywords,
/// `$1`-style parameters and `?` placeholders stay. The result is at most
/// [`MAX_SANITIZED_LEN`] bytes (cut at a character boundary).
///
/// A `"…"` token is kept as a (PostgreSQL) quoted identifier, except where only a value can
/// stand — after a comparison operator or `LIKE`, or as an item of an `IN (…)` or `VALUES (…)`
/// list — where it is a MySQL string and replaced.
pub fn sanitize(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len().min(MAX_SANITIZED_LEN));
    let mut lexer = Lexer::new(sql);
    let mut space = false;
    // Previous significant token, for the context rules.
    let mut prev: Option<Token<'_>> = None;
    // Open parens, innermost last; only the first `MAX_TRACKED_DEPTH` are tracked.
    let mut parens: Vec<Paren> = Vec::new();
    let mut depth = 0usize;
    // The last list closed was a `VALUES (…)` tuple, so `, (` opens another one.
    let mut after_values_tuple = false;

    while let Some(token) = lexer.next_token() {
        if matches!(token.kind, Kind::Space | Kind::Comment) {
            space = true;
            continue;
        }
        let tracked = depth > 0 && depth == parens.len();
        let list = parens.last_mut().filter(|_| tracked);
        let literal = match token.kind {
            Kind::Str | Kind::Number => true,
            Kind::Quoted(b'"') => value_context(prev.as_ref(), list.as_deref()),
            _ => false,
        };
        let value = literal || token.kind == Kind::Placeholder;
        if let Some(list) = list {
            let neutral = value
                || token.is_punct(",")
                || token.is_punct(")")
                || (token.kind == Kind::Op && matches!(token.text, "-" | "+"));
            list.only_values &= neutral;
            list.items |= value;
        }

        let text = if literal { "?" } else { token.text };
        let fits = if token.is_punct("(") {
            let after_in = prev.as_ref().is_some_and(|p| p.is_word("IN"));
            let values_tuple = prev.as_ref().is_some_and(|p| p.is_word("VALUES"))
                || (after_values_tuple && prev.as_ref().is_some_and(|p| p.is_punct(",")));
            let fits = push_token(&mut out, &mut space, "(");
            if depth == parens.len() && parens.len() < MAX_TRACKED_DEPTH {
                parens.push(Paren {
                    open_end: out.len(),
                    in_list: after_in,
                    values_tuple,
                    only_values: true,
                    items: false,
                });
            }
            depth += 1;
            after_values_tuple = false;
            fits
        } else if token.is_punct(")") && depth > 0 {
            after_values_tuple = false;
            if depth == parens.len()
                && let Some(paren) = parens.pop()
            {
                after_values_tuple = paren.values_tuple;
                if paren.in_list && paren.only_values && paren.items && paren.open_end <= out.len()
                {
                    out.truncate(paren.open_end);
                    out.push('?');
                    space = false;
                }
            }
            depth -= 1;
            push_token(&mut out, &mut space, ")")
        } else {
            if !token.is_punct(",") {
                after_values_tuple = false;
            }
            push_token(&mut out, &mut space, text)
        };
        if !fits {
            break;
        }
        prev = Some(token);
    }
    truncate_at_char_boundary(&mut out, MAX_SANITIZED_LEN);
    out
}

/// The operation (first keyword, upper-cased) and the table it works on, where simple.
///
/// The operation is the first word of the statement (after comments and opening parens); for
/// `WITH` it is the keyword of the main statement after the common table expressions, when
/// they can be skipped. The collection is read for `SELECT … FROM t` (the first table, not a
/// subquery or function), `INSERT [INTO] t`, `REPLACE [INTO] t`, `UPDATE t`, `DELETE FROM t`,
/// `MERGE INTO t`, `CREATE [TEMP|UNLOGGED] TABLE [IF NOT EXISTS] t`,
/// `DROP TABLE [IF EXISTS] t`, `ALTER TABLE [IF EXISTS] t`, `TRUNCATE [TABLE] t` and `COPY t`;
/// schema qualification stays (`public.users`), quotes go.
pub fn summarize(sql: &str) -> (Option<String>, Option<String>) {
    let mut tokens = Significant::new(sql);
    // Leading parens: `(SELECT …) UNION (SELECT …)`.
    let mut first = tokens.next();
    while first.as_ref().is_some_and(|t| t.is_punct("(")) {
        first = tokens.next();
    }
    let Some(first) = first.filter(is_keyword_like) else {
        return (None, None);
    };
    let mut operation = first.text.to_ascii_uppercase();
    let collection = if operation == "WITH" {
        match skip_common_table_expressions(&mut tokens) {
            Some(main) => {
                operation = main.text.to_ascii_uppercase();
                collection_after(&operation, &mut tokens)
            }
            None => None,
        }
    } else {
        collection_after(&operation, &mut tokens)
    };
    (Some(operation), collection)
}

/// Parenthesised group that `sanitize` keeps track of.
#[derive(Default)]
struct Paren {
    /// Output length right after the `(`.
    open_end: usize,
    /// Opened right after `IN`.
    in_list: bool,
    /// A `VALUES` tuple.
    values_tuple: bool,
    /// Only literals, placeholders, commas and signs so far.
    only_values: bool,
    /// At least one literal or placeholder.
    items: bool,
}

/// Whether a `"…"` token in this position can only be a value (a MySQL string).
fn value_context(prev: Option<&Token<'_>>, list: Option<&Paren>) -> bool {
    let Some(prev) = prev else {
        return false;
    };
    match prev.kind {
        Kind::Op => matches!(
            prev.text,
            "=" | "==" | "<>" | "!=" | "<" | ">" | "<=" | ">=" | "<=>"
        ),
        Kind::Word => ["LIKE", "ILIKE", "RLIKE", "REGEXP", "THEN", "ELSE"]
            .iter()
            .any(|k| prev.text.eq_ignore_ascii_case(k)),
        Kind::Punct if prev.text == "(" || prev.text == "," => {
            list.is_some_and(|l| l.in_list || l.values_tuple)
        }
        _ => false,
    }
}

/// Appends `text`, after one space if one is due; `false` when it did not fit (then as much
/// of it as fits was appended and the output is full).
fn push_token(out: &mut String, space: &mut bool, text: &str) -> bool {
    if *space && !out.is_empty() {
        out.push(' ');
    }
    *space = false;
    let room = MAX_SANITIZED_LEN.saturating_sub(out.len());
    if text.len() <= room {
        out.push_str(text);
        return true;
    }
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&text[..end]);
    false
}

fn truncate_at_char_boundary(text: &mut String, max: usize) {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    let trimmed = text.trim_end().len();
    text.truncate(trimmed);
}

fn is_keyword_like(token: &Token<'_>) -> bool {
    token.kind == Kind::Word
        && token.text.len() <= 32
        && token
            .text
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_')
}

/// After `WITH`: skips `[RECURSIVE] name [(cols)] AS [[NOT] MATERIALIZED] (…)`, … and returns
/// the main statement's first word.
fn skip_common_table_expressions<'a>(tokens: &mut Significant<'a>) -> Option<Token<'a>> {
    let mut next = tokens.next()?;
    if next.is_word("RECURSIVE") {
        next = tokens.next()?;
    }
    loop {
        // The CTE's name.
        if !matches!(next.kind, Kind::Word | Kind::Quoted(_)) {
            return None;
        }
        next = tokens.next()?;
        if next.is_punct("(") {
            tokens.skip_group()?;
            next = tokens.next()?;
        }
        if !next.is_word("AS") {
            return None;
        }
        next = tokens.next()?;
        if next.is_word("NOT") {
            next = tokens.next()?;
        }
        if next.is_word("MATERIALIZED") {
            next = tokens.next()?;
        }
        if !next.is_punct("(") {
            return None;
        }
        tokens.skip_group()?;
        next = tokens.next()?;
        if next.is_punct(",") {
            next = tokens.next()?;
            continue;
        }
        return Some(next).filter(is_keyword_like);
    }
}

/// The collection for a statement whose operation keyword was just read.
fn collection_after(operation: &str, tokens: &mut Significant<'_>) -> Option<String> {
    match operation {
        "SELECT" => {
            tokens.find_word_at_top_level("FROM")?;
            let mut next = tokens.next()?;
            if next.is_word("ONLY") {
                next = tokens.next()?;
            }
            table_name(next, tokens)
        }
        "INSERT" | "REPLACE" => {
            let mut next = tokens.next()?;
            while ["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE"]
                .iter()
                .any(|k| next.is_word(k))
            {
                next = tokens.next()?;
            }
            if next.is_word("INTO") {
                next = tokens.next()?;
            }
            table_name(next, tokens)
        }
        "UPDATE" => {
            let mut next = tokens.next()?;
            while ["ONLY", "LOW_PRIORITY", "IGNORE"]
                .iter()
                .any(|k| next.is_word(k))
            {
                next = tokens.next()?;
            }
            table_name(next, tokens)
        }
        "DELETE" => {
            let mut next = tokens.next()?;
            while ["LOW_PRIORITY", "QUICK", "IGNORE"]
                .iter()
                .any(|k| next.is_word(k))
            {
                next = tokens.next()?;
            }
            if !next.is_word("FROM") {
                return None;
            }
            next = tokens.next()?;
            if next.is_word("ONLY") {
                next = tokens.next()?;
            }
            table_name(next, tokens)
        }
        "MERGE" => {
            let mut next = tokens.next()?;
            if !next.is_word("INTO") {
                return None;
            }
            next = tokens.next()?;
            if next.is_word("ONLY") {
                next = tokens.next()?;
            }
            table_name(next, tokens)
        }
        "CREATE" => {
            let mut next = tokens.next()?;
            if next.is_word("OR") {
                if !tokens.next()?.is_word("REPLACE") {
                    return None;
                }
                next = tokens.next()?;
            }
            while ["GLOBAL", "LOCAL", "TEMP", "TEMPORARY", "UNLOGGED"]
                .iter()
                .any(|k| next.is_word(k))
            {
                next = tokens.next()?;
            }
            if !next.is_word("TABLE") {
                return None;
            }
            next = skip_if_exists(tokens, true)?;
            table_name(next, tokens)
        }
        "DROP" | "ALTER" => {
            if !tokens.next()?.is_word("TABLE") {
                return None;
            }
            let mut next = skip_if_exists(tokens, false)?;
            if next.is_word("ONLY") {
                next = tokens.next()?;
            }
            table_name(next, tokens)
        }
        "TRUNCATE" => {
            let mut next = tokens.next()?;
            if next.is_word("TABLE") {
                next = tokens.next()?;
            }
            if next.is_word("ONLY") {
                next = tokens.next()?;
            }
            table_name(next, tokens)
        }
        "COPY" => {
            let next = tokens.next()?;
            table_name(next, tokens)
        }
        _ => None,
    }
}

/// Reads past `IF [NOT] EXISTS` and returns the token after it (or the next one if absent).
fn skip_if_exists<'a>(tokens: &mut Significant<'a>, not: bool) -> Option<Token<'a>> {
    let next = tokens.next()?;
    if !next.is_word("IF") {
        return Some(next);
    }
    if not && !tokens.next()?.is_word("NOT") {
        return None;
    }
    if !tokens.next()?.is_word("EXISTS") {
        return None;
    }
    tokens.next()
}

/// `first` and what follows as a (possibly qualified) table name; `None` for subqueries,
/// function calls, keywords and anything else that is not plainly a table.
fn table_name(first: Token<'_>, tokens: &mut Significant<'_>) -> Option<String> {
    let mut name = String::new();
    let mut part = first;
    loop {
        match part.kind {
            Kind::Word => {
                if RESERVED_AFTER_TABLE_POSITION
                    .iter()
                    .any(|k| part.text.eq_ignore_ascii_case(k))
                {
                    return None;
                }
                name.push_str(part.text);
            }
            Kind::Quoted(quote) => unquote_into(part.text, quote, &mut name),
            _ => return None,
        }
        if name.len() > MAX_NAME_LEN {
            return None;
        }
        match tokens.peek() {
            Some(t) if t.is_punct(".") && !t.preceded_by_space => {
                tokens.next();
                name.push('.');
                part = tokens.next()?;
            }
            // A function call (`FROM generate_series(1, 3)`), not a table.
            Some(t) if t.is_punct("(") => {
                // `INSERT INTO t (a, b)` and `COPY t (a)` have column lists, though.
                return tokens.column_list_allowed.then_some(name);
            }
            _ => return Some(name),
        }
    }
}

/// Words that cannot be a table where one is expected (so the statement is not simple).
const RESERVED_AFTER_TABLE_POSITION: &[&str] = &[
    "SELECT", "VALUES", "SET", "WHERE", "LATERAL", "UNNEST", "ROWS", "FROM", "TABLE", "WITH",
];

fn unquote_into(text: &str, quote: u8, name: &mut String) {
    let quote = char::from(quote);
    let inner = text
        .strip_prefix(quote)
        .map(|t| t.strip_suffix(quote).unwrap_or(t))
        .unwrap_or(text);
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        name.push(c);
        if c == quote && chars.peek() == Some(&quote) {
            chars.next();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Space,
    Comment,
    /// Bare identifier or keyword.
    Word,
    /// `"…"` or `` `…` `` (the quote byte).
    Quoted(u8),
    /// String literal of any form (the whole literal, prefix included).
    Str,
    Number,
    /// `$1`.
    Param,
    /// `?`.
    Placeholder,
    /// `( ) , ; . [ ] { }`.
    Punct,
    /// A run of operator characters (or any other byte).
    Op,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    /// Whitespace or a comment came right before (summarize: `a . b` vs `a.b` hardly matters,
    /// but `FROM t .5` does not occur; kept for qualified-name reading).
    preceded_by_space: bool,
}

impl Token<'_> {
    fn is_punct(&self, p: &str) -> bool {
        self.kind == Kind::Punct && self.text == p
    }

    fn is_word(&self, w: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(w)
    }
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_op_byte(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b':'
    )
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.bytes().get(i).copied()
    }

    /// Moves `end` forward to a char boundary (input is `&str`, so one exists at the end).
    fn boundary(&self, mut end: usize) -> usize {
        end = end.min(self.src.len());
        while !self.src.is_char_boundary(end) {
            end += 1;
        }
        end
    }

    fn next_token(&mut self) -> Option<Token<'a>> {
        let start = self.pos;
        let b = self.at(start)?;
        let kind = match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
                let mut i = start + 1;
                while matches!(
                    self.at(i),
                    Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
                ) {
                    i += 1;
                }
                self.pos = i;
                Kind::Space
            }
            b'-' if self.at(start + 1) == Some(b'-') => {
                let rest = &self.bytes()[start..];
                self.pos = start + rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                Kind::Comment
            }
            b'/' if self.at(start + 1) == Some(b'*') => {
                self.pos = self.block_comment_end(start);
                Kind::Comment
            }
            b'\'' => {
                self.pos = self.quoted_end(start, b'\'', true);
                Kind::Str
            }
            b'"' | b'`' => {
                self.pos = self.quoted_end(start, b, false);
                Kind::Quoted(b)
            }
            b'$' => {
                if self.at(start + 1).is_some_and(|c| c.is_ascii_digit()) {
                    let mut i = start + 1;
                    while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
                        i += 1;
                    }
                    self.pos = i;
                    Kind::Param
                } else if let Some(end) = self.dollar_quoted_end(start) {
                    self.pos = end;
                    Kind::Str
                } else {
                    self.pos = start + 1;
                    Kind::Op
                }
            }
            b'0'..=b'9' => {
                self.pos = self.number_end(start);
                Kind::Number
            }
            b'.' if self.at(start + 1).is_some_and(|c| c.is_ascii_digit())
                && !self.after_name(start) =>
            {
                self.pos = self.number_end(start);
                Kind::Number
            }
            b'?' => {
                self.pos = start + 1;
                Kind::Placeholder
            }
            b'(' | b')' | b',' | b';' | b'.' | b'[' | b']' | b'{' | b'}' => {
                self.pos = start + 1;
                Kind::Punct
            }
            b'U' | b'u'
                if self.at(start + 1) == Some(b'&') && self.at(start + 2) == Some(b'\'') =>
            {
                self.pos = self.quoted_end(start + 2, b'\'', true);
                Kind::Str
            }
            c if is_word_start(c) => {
                let mut i = start + 1;
                while self.at(i).is_some_and(is_word_byte) {
                    i += 1;
                }
                let word = &self.bytes()[start..i];
                let prefix = matches!(
                    word,
                    [b'E' | b'e' | b'B' | b'b' | b'X' | b'x' | b'N' | b'n']
                ) || (word.first() == Some(&b'_') && word.len() <= 32);
                if prefix && self.at(i) == Some(b'\'') {
                    // A prefixed string: E'…', X'…', B'…', N'…', _charset'…'.
                    self.pos = self.quoted_end(i, b'\'', true);
                    Kind::Str
                } else {
                    self.pos = i;
                    Kind::Word
                }
            }
            c if is_op_byte(c) => {
                let mut i = start + 1;
                while let Some(c) = self.at(i) {
                    let comment_starts = (c == b'-' && self.at(i + 1) == Some(b'-'))
                        || (c == b'/' && self.at(i + 1) == Some(b'*'));
                    if !is_op_byte(c) || comment_starts {
                        break;
                    }
                    i += 1;
                }
                self.pos = i;
                Kind::Op
            }
            _ => {
                self.pos = self.boundary(start + 1);
                Kind::Op
            }
        };
        self.pos = self.boundary(self.pos.max(start + 1));
        Some(Token {
            kind,
            text: &self.src[start..self.pos],
            preceded_by_space: false,
        })
    }

    /// Whether the byte before `at` ends a name (then `.5` after it is not a number).
    fn after_name(&self, at: usize) -> bool {
        at.checked_sub(1)
            .map(|i| self.bytes()[i])
            .is_some_and(|p| matches!(p, b'"' | b'`' | b')' | b']') || is_word_byte(p))
    }

    fn block_comment_end(&self, start: usize) -> usize {
        let bytes = self.bytes();
        let mut depth = 0usize;
        let mut i = start;
        while i + 1 < bytes.len() {
            if bytes[i] == b'/' && bytes[i + 1] == b'*' {
                depth += 1;
                i += 2;
            } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            } else {
                i += 1;
            }
        }
        bytes.len()
    }

    /// End of a quoted token opening at `start`: a doubled quote is an escaped quote, and so
    /// is a backslash-escaped one if `backslash`. Unterminated: the end of the text.
    fn quoted_end(&self, start: usize, quote: u8, backslash: bool) -> usize {
        let bytes = self.bytes();
        let mut i = start + 1;
        while i < bytes.len() {
            let c = bytes[i];
            if backslash && c == b'\\' {
                i += 2;
            } else if c == quote {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        bytes.len()
    }

    /// `$tag$…$tag$` (or `$$…$$`) starting at `start`; unterminated: the end of the text.
    fn dollar_quoted_end(&self, start: usize) -> Option<usize> {
        let bytes = self.bytes();
        let mut i = start + 1;
        if bytes.get(i).is_some_and(|&c| is_word_start(c)) {
            while bytes.get(i).is_some_and(|&c| is_word_byte(c) && c != b'$') {
                i += 1;
            }
        }
        if bytes.get(i) != Some(&b'$') {
            return None;
        }
        let delimiter = &bytes[start..=i];
        let body = &bytes[i + 1..];
        let end = body
            .windows(delimiter.len())
            .position(|w| w == delimiter)
            .map_or(bytes.len(), |p| i + 1 + p + delimiter.len());
        Some(end)
    }

    fn number_end(&self, start: usize) -> usize {
        let bytes = self.bytes();
        let mut i = start;
        if bytes[i] == b'0'
            && let Some(radix) = bytes.get(i + 1).map(u8::to_ascii_lowercase)
            && matches!(radix, b'x' | b'b' | b'o')
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            i += 2;
            while bytes
                .get(i)
                .is_some_and(|c| c.is_ascii_hexdigit() || *c == b'_')
            {
                i += 1;
            }
            return i;
        }
        let digits = |i: &mut usize| {
            while bytes
                .get(*i)
                .is_some_and(|c| c.is_ascii_digit() || *c == b'_')
            {
                *i += 1;
            }
        };
        digits(&mut i);
        if bytes.get(i) == Some(&b'.') && bytes.get(i + 1) != Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
        if bytes.get(i).is_some_and(|c| c.eq_ignore_ascii_case(&b'e')) {
            let mut j = i + 1;
            if matches!(bytes.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if bytes.get(j).is_some_and(u8::is_ascii_digit) {
                i = j;
                digits(&mut i);
            }
        }
        i
    }
}

/// Tokens without whitespace and comments, with one token of lookahead.
struct Significant<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Option<Token<'a>>>,
    /// Budget of tokens to look at, so that huge texts cost bounded time.
    budget: usize,
    /// Whether a `(` may follow a table name (a column list) rather than mark a function.
    column_list_allowed: bool,
}

impl<'a> Significant<'a> {
    fn new(src: &'a str) -> Self {
        Significant {
            lexer: Lexer::new(src),
            peeked: None,
            budget: 20_000,
            column_list_allowed: true,
        }
    }

    fn pull(&mut self) -> Option<Token<'a>> {
        let mut space = false;
        loop {
            if self.budget == 0 {
                return None;
            }
            self.budget -= 1;
            let mut token = self.lexer.next_token()?;
            match token.kind {
                Kind::Space | Kind::Comment => space = true,
                _ => {
                    token.preceded_by_space = space;
                    return Some(token);
                }
            }
        }
    }

    fn next(&mut self) -> Option<Token<'a>> {
        match self.peeked.take() {
            Some(token) => token,
            None => self.pull(),
        }
    }

    fn peek(&mut self) -> Option<Token<'a>> {
        if self.peeked.is_none() {
            self.peeked = Some(self.pull());
        }
        self.peeked.flatten()
    }

    /// After a `(` was read: skips to just past its matching `)`.
    fn skip_group(&mut self) -> Option<()> {
        let mut depth = 1usize;
        while depth > 0 {
            let token = self.next()?;
            if token.is_punct("(") {
                depth += 1;
            } else if token.is_punct(")") {
                depth -= 1;
            }
        }
        Some(())
    }

    /// Advances past the first `word` outside parens (of the current statement).
    fn find_word_at_top_level(&mut self, word: &str) -> Option<()> {
        // The FROM of `SELECT … FROM t` is followed by a table, never by a column list.
        self.column_list_allowed = false;
        let mut depth = 0usize;
        loop {
            let token = self.next()?;
            if token.is_punct("(") {
                depth += 1;
            } else if token.is_punct(")") {
                depth = depth.saturating_sub(1);
            } else if token.is_punct(";") && depth == 0 {
                return None;
            } else if depth == 0 && token.is_word(word) {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sql: &str) -> String {
        sanitize(sql)
    }

    fn summary(sql: &str) -> (Option<String>, Option<String>) {
        summarize(sql)
    }

    fn op_coll(op: &str, coll: Option<&str>) -> (Option<String>, Option<String>) {
        (Some(op.to_owned()), coll.map(str::to_owned))
    }

    #[test]
    fn string_literals_become_placeholders() {
        assert_eq!(
            s("SELECT * FROM users WHERE name = 'bob' AND note = 'it''s'"),
            "SELECT * FROM users WHERE name = ? AND note = ?"
        );
        assert_eq!(s("SELECT E'a\\'b', 'c'"), "SELECT ?, ?");
        assert_eq!(s("SELECT e'\\n'"), "SELECT ?");
        assert_eq!(
            s("SELECT N'x', U&'d\\0061t', _utf8mb4'z'"),
            "SELECT ?, ?, ?"
        );
        assert_eq!(s("SELECT DATE '2024-01-01'"), "SELECT DATE ?");
        assert_eq!(s("SELECT '2024-01-01'::date"), "SELECT ?::date");
        // MySQL backslash escapes inside plain strings do not end the literal.
        assert_eq!(
            s("SELECT * FROM t WHERE a = 'it\\'s secret' AND b = 1"),
            "SELECT * FROM t WHERE a = ? AND b = ?"
        );
    }

    #[test]
    fn dollar_quoted_strings_become_placeholders() {
        assert_eq!(s("SELECT $$don't$$"), "SELECT ?");
        assert_eq!(
            s("SELECT $fn$ body with $$ inside $fn$ AS x"),
            "SELECT ? AS x"
        );
        assert_eq!(s("SELECT $a$unterminated"), "SELECT ?");
        // Parameters are not dollar quotes.
        assert_eq!(
            s("SELECT * FROM t WHERE id = $1 AND x = $12"),
            "SELECT * FROM t WHERE id = $1 AND x = $12"
        );
    }

    #[test]
    fn numbers_become_placeholders_but_not_inside_identifiers() {
        assert_eq!(
            s("SELECT t1.col2, \"col3\" FROM t1 WHERE a = 42 AND b > 3.14 AND c < .5e-3"),
            "SELECT t1.col2, \"col3\" FROM t1 WHERE a = ? AND b > ? AND c < ?"
        );
        assert_eq!(s("SELECT 1e10, 2E+5, 1_000_000"), "SELECT ?, ?, ?");
        assert_eq!(s("LIMIT 10 OFFSET 20"), "LIMIT ? OFFSET ?");
        assert_eq!(s("SELECT -5"), "SELECT -?");
        assert_eq!(s("SELECT a-1"), "SELECT a-?");
        assert_eq!(s("SELECT x$1 FROM t"), "SELECT x$1 FROM t");
    }

    #[test]
    fn hex_and_bit_literals_become_placeholders() {
        assert_eq!(
            s("SELECT 0x1F, X'1F', B'0101', 0b101, 0o17"),
            "SELECT ?, ?, ?, ?, ?"
        );
        assert_eq!(s("SELECT x'ff'"), "SELECT ?");
    }

    #[test]
    fn comments_are_dropped_and_whitespace_collapsed() {
        assert_eq!(
            s("SELECT a -- the secret 123\nFROM t /* note 'x' */ WHERE b = 1"),
            "SELECT a FROM t WHERE b = ?"
        );
        assert_eq!(s("/* a /* nested */ comment */SELECT 1"), "SELECT ?");
        assert_eq!(s("SELECT a/*x*/FROM t"), "SELECT a FROM t");
        assert_eq!(s("  SELECT\n\t a  \n FROM t  "), "SELECT a FROM t");
        assert_eq!(s("SELECT 1 -- trailing"), "SELECT ?");
        assert_eq!(s("SELECT a--b\nFROM t"), "SELECT a FROM t");
    }

    #[test]
    fn in_lists_collapse_to_one_placeholder() {
        assert_eq!(
            s("SELECT * FROM t WHERE id IN (1, 2, 3) AND name in ('a','b')"),
            "SELECT * FROM t WHERE id IN (?) AND name in (?)"
        );
        assert_eq!(s("WHERE id IN (?, ?, ?)"), "WHERE id IN (?)");
        assert_eq!(s("WHERE id IN (-1, +2)"), "WHERE id IN (?)");
        // Parameters, columns and subqueries are not collapsed.
        assert_eq!(s("WHERE id IN ($1, $2)"), "WHERE id IN ($1, $2)");
        assert_eq!(s("WHERE id IN (a, 1)"), "WHERE id IN (a, ?)");
        assert_eq!(
            s("WHERE id IN (SELECT id FROM u WHERE x = 1)"),
            "WHERE id IN (SELECT id FROM u WHERE x = ?)"
        );
        assert_eq!(s("WHERE id IN ((1), 2)"), "WHERE id IN ((?), ?)");
        assert_eq!(s("WHERE f(1, 2)"), "WHERE f(?, ?)");
        assert_eq!(
            s("INSERT INTO t VALUES (1, 'a'), (2, 'b')"),
            "INSERT INTO t VALUES (?, ?), (?, ?)"
        );
    }

    #[test]
    fn quoted_identifiers_stay_but_mysql_double_quoted_strings_go() {
        assert_eq!(
            s("SELECT \"Name\", \"a\"\"b\" FROM \"My Table\" WHERE \"id\" = 1"),
            "SELECT \"Name\", \"a\"\"b\" FROM \"My Table\" WHERE \"id\" = ?"
        );
        assert_eq!(
            s("SELECT * FROM `users` WHERE `name` = \"bob\" AND x LIKE \"%a%\""),
            "SELECT * FROM `users` WHERE `name` = ? AND x LIKE ?"
        );
        assert_eq!(
            s("INSERT INTO `t` (`a`, `b`) VALUES (\"x\", \"y\"), (\"z\", 1)"),
            "INSERT INTO `t` (`a`, `b`) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(s("WHERE a IN (\"x\", \"y\")"), "WHERE a IN (?)");
        assert_eq!(s("SELECT `we``ird` FROM t"), "SELECT `we``ird` FROM t");
    }

    #[test]
    fn placeholders_and_operators_are_kept() {
        assert_eq!(
            s("SELECT * FROM t WHERE a=? AND b = :name AND c::text ~ $1"),
            "SELECT * FROM t WHERE a=? AND b = :name AND c::text ~ $1"
        );
        assert_eq!(s("SELECT data->>'k' FROM t"), "SELECT data->>? FROM t");
        assert_eq!(s("SELECT a[1] FROM t"), "SELECT a[?] FROM t");
    }

    #[test]
    fn unterminated_constructs_swallow_the_rest() {
        assert_eq!(s("SELECT 'abc"), "SELECT ?");
        assert_eq!(s("SELECT \"abc"), "SELECT \"abc");
        assert_eq!(s("SELECT 1 /* open"), "SELECT ?");
        assert_eq!(s(""), "");
        assert_eq!(s("   "), "");
    }

    #[test]
    fn output_is_bounded_and_cut_at_a_char_boundary() {
        let long = format!("SELECT {} FROM t", "é".repeat(10_000));
        let out = s(&long);
        assert!(out.len() <= MAX_SANITIZED_LEN);
        assert!(out.starts_with("SELECT éé"));
        let many = format!("SELECT {}", "a, ".repeat(5000));
        assert!(s(&many).len() <= MAX_SANITIZED_LEN);
        let huge_in = format!("SELECT 1 WHERE x IN ({}1)", "1, ".repeat(100_000));
        assert!(s(&huge_in).len() <= MAX_SANITIZED_LEN);
    }

    #[test]
    fn sanitize_never_panics_on_odd_input() {
        for text in [
            "'", "\"", "`", "$", "$$", "$a", "$a$", "--", "/*", "*/", "E'", "U&'", "0x", "1e",
            "1e+", ".", "..", "?", "é'", "x'é", "((((", "))))", "IN (", "IN )", "\u{0}", "'\\",
            "$1$", "0b", "9.", "\"\"\"",
        ] {
            let _ = sanitize(text);
            let _ = summarize(text);
        }
        // Every prefix of a tricky statement, cut anywhere (also mid-character).
        let tricky =
            "SELECT é, 'a''b', $t$x$t$, \"q\"\"\", `b`, 0x1f, 1.5e3 /* c */ -- d\n IN (1,2)";
        for end in 0..=tricky.len() {
            if tricky.is_char_boundary(end) {
                let _ = sanitize(&tricky[..end]);
                let _ = summarize(&tricky[..end]);
            }
        }
    }

    #[test]
    fn operation_is_the_first_keyword_upper_cased() {
        assert_eq!(summary("select 1"), op_coll("SELECT", None));
        assert_eq!(summary("  begin"), op_coll("BEGIN", None));
        assert_eq!(summary("COMMIT"), op_coll("COMMIT", None));
        assert_eq!(summary("rollback;"), op_coll("ROLLBACK", None));
        assert_eq!(summary("SET search_path = x"), op_coll("SET", None));
        assert_eq!(summary("SHOW server_version"), op_coll("SHOW", None));
        assert_eq!(summary("EXPLAIN SELECT * FROM t"), op_coll("EXPLAIN", None));
        assert_eq!(summary("CALL proc(1)"), op_coll("CALL", None));
        assert_eq!(
            summary("-- hi\n/* there */ Vacuum t"),
            op_coll("VACUUM", None)
        );
        assert_eq!(summary(""), (None, None));
        assert_eq!(summary("   -- only a comment"), (None, None));
        assert_eq!(summary("123"), (None, None));
        assert_eq!(summary("'str'"), (None, None));
    }

    #[test]
    fn select_collection_is_the_first_table_after_from() {
        assert_eq!(
            summary("SELECT id, name FROM users WHERE id = 1"),
            op_coll("SELECT", Some("users"))
        );
        assert_eq!(
            summary("SELECT * FROM public.users u JOIN orders o ON o.uid = u.id"),
            op_coll("SELECT", Some("public.users"))
        );
        assert_eq!(
            summary("SELECT * FROM \"My Schema\".\"Users\""),
            op_coll("SELECT", Some("My Schema.Users"))
        );
        assert_eq!(
            summary("SELECT * FROM `shop`.`orders`"),
            op_coll("SELECT", Some("shop.orders"))
        );
        assert_eq!(
            summary("SELECT a, b FROM t1, t2"),
            op_coll("SELECT", Some("t1"))
        );
        assert_eq!(
            summary("SELECT * FROM ONLY parent"),
            op_coll("SELECT", Some("parent"))
        );
        assert_eq!(
            summary("SELECT extract(year FROM now()), substring(s FROM 2) FROM events"),
            op_coll("SELECT", Some("events"))
        );
        assert_eq!(
            summary("SELECT (SELECT max(x) FROM inner_t) FROM outer_t"),
            op_coll("SELECT", Some("outer_t"))
        );
        assert_eq!(
            summary("(SELECT a FROM t1) UNION (SELECT a FROM t2)"),
            op_coll("SELECT", Some("t1"))
        );
        assert_eq!(
            summary("select count(*) from Users"),
            op_coll("SELECT", Some("Users"))
        );
    }

    #[test]
    fn select_without_a_plain_table_has_no_collection() {
        assert_eq!(summary("SELECT 1"), op_coll("SELECT", None));
        assert_eq!(summary("SELECT now()"), op_coll("SELECT", None));
        assert_eq!(
            summary("SELECT * FROM (SELECT 1) AS sub"),
            op_coll("SELECT", None)
        );
        assert_eq!(
            summary("SELECT g FROM generate_series(1, 10) g"),
            op_coll("SELECT", None)
        );
        assert_eq!(
            summary("SELECT 1; SELECT * FROM t"),
            op_coll("SELECT", None)
        );
        assert_eq!(
            summary("SELECT * FROM LATERAL f(x)"),
            op_coll("SELECT", None)
        );
    }

    #[test]
    fn dml_collections() {
        assert_eq!(
            summary("INSERT INTO users (email, name) VALUES ($1, $2)"),
            op_coll("INSERT", Some("users"))
        );
        assert_eq!(
            summary("insert ignore into `logs` values (1)"),
            op_coll("INSERT", Some("logs"))
        );
        assert_eq!(summary("INSERT t VALUES (1)"), op_coll("INSERT", Some("t")));
        assert_eq!(
            summary("REPLACE INTO kv VALUES (1, 2)"),
            op_coll("REPLACE", Some("kv"))
        );
        assert_eq!(
            summary("UPDATE users SET name = 'x' WHERE id = 2"),
            op_coll("UPDATE", Some("users"))
        );
        assert_eq!(
            summary("UPDATE ONLY app.accounts SET x = 1"),
            op_coll("UPDATE", Some("app.accounts"))
        );
        assert_eq!(
            summary("DELETE FROM sessions WHERE expires < now()"),
            op_coll("DELETE", Some("sessions"))
        );
        assert_eq!(summary("DELETE t FROM t JOIN u"), op_coll("DELETE", None));
        assert_eq!(
            summary("MERGE INTO stock s USING delivery d ON s.id = d.id"),
            op_coll("MERGE", Some("stock"))
        );
    }

    #[test]
    fn ddl_and_utility_collections() {
        assert_eq!(
            summary("CREATE TABLE IF NOT EXISTS public.items (id int)"),
            op_coll("CREATE", Some("public.items"))
        );
        assert_eq!(
            summary("create temporary table tmp_x as select 1"),
            op_coll("CREATE", Some("tmp_x"))
        );
        assert_eq!(
            summary("CREATE UNLOGGED TABLE cache (k text)"),
            op_coll("CREATE", Some("cache"))
        );
        assert_eq!(summary("CREATE INDEX i ON t (a)"), op_coll("CREATE", None));
        assert_eq!(
            summary("DROP TABLE IF EXISTS old_stuff, other"),
            op_coll("DROP", Some("old_stuff"))
        );
        assert_eq!(
            summary("DROP TABLE \"Quoted\""),
            op_coll("DROP", Some("Quoted"))
        );
        assert_eq!(summary("DROP INDEX i"), op_coll("DROP", None));
        assert_eq!(
            summary("ALTER TABLE users ADD COLUMN age int"),
            op_coll("ALTER", Some("users"))
        );
        assert_eq!(
            summary("TRUNCATE TABLE logs"),
            op_coll("TRUNCATE", Some("logs"))
        );
        assert_eq!(
            summary("TRUNCATE logs, other"),
            op_coll("TRUNCATE", Some("logs"))
        );
        assert_eq!(
            summary("COPY users FROM STDIN"),
            op_coll("COPY", Some("users"))
        );
        assert_eq!(
            summary("COPY  users (id, email) TO STDOUT"),
            op_coll("COPY", Some("users"))
        );
        assert_eq!(
            summary("COPY (SELECT * FROM users) TO STDOUT"),
            op_coll("COPY", None)
        );
    }

    #[test]
    fn with_reports_the_main_statement() {
        assert_eq!(
            summary("WITH recent AS (SELECT * FROM orders WHERE d > now()) SELECT * FROM recent"),
            op_coll("SELECT", Some("recent"))
        );
        assert_eq!(
            summary(
                "WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM t), \
                 u AS MATERIALIZED (SELECT 1) INSERT INTO log SELECT n FROM t"
            ),
            op_coll("INSERT", Some("log"))
        );
        assert_eq!(
            summary("WITH d AS NOT MATERIALIZED (DELETE FROM q RETURNING *) UPDATE s SET n = 1"),
            op_coll("UPDATE", Some("s"))
        );
        assert_eq!(summary("WITH broken"), (Some("WITH".to_owned()), None));
        assert_eq!(
            summary("WITH x AS (SELECT 1"),
            (Some("WITH".to_owned()), None)
        );
    }

    #[test]
    fn multi_statement_text_is_summarised_by_its_first_statement() {
        assert_eq!(
            summary("BEGIN; UPDATE users SET name = 'x'; COMMIT"),
            op_coll("BEGIN", None)
        );
        assert_eq!(
            summary("DELETE FROM a; DELETE FROM b"),
            op_coll("DELETE", Some("a"))
        );
    }

    #[test]
    fn collection_names_are_bounded() {
        let long = format!("SELECT * FROM {}", "x".repeat(1000));
        assert_eq!(summary(&long), op_coll("SELECT", None));
        let huge = format!("SELECT {} FROM t", "a + ".repeat(100_000));
        // Bounded work: the FROM is beyond the token budget, which is fine.
        let (op, _) = summary(&huge);
        assert_eq!(op.as_deref(), Some("SELECT"));
    }
}
