//! A `/v1` batch body cut into runs of transactions without reading it through, so that the runs
//! can be parsed on several cores at once.
//!
//! A cut is a guess: a `,` between a `}` and a `{` near each share of the body, found with a byte
//! search and no tracking of strings (scanning the body for them would cost a fifth of parsing
//! it). A guess inside a string (a free-text field holding `},{`) is caught by what follows: each
//! run is parsed strictly as a JSON array of transactions, the first starting right after the
//! array's `[`, so a run that begins at a true boundary and ends inside a string fails to parse,
//! and by induction every run that parses began and ended at true boundaries. The rest of the
//! object after the array is parsed strictly too, so the pieces are valid exactly when the whole
//! body is. A body in any other shape, or a failed guess, is parsed whole by the caller, which also
//! names what is wrong with it.

use std::ops::Range;

use serde::Deserialize;

/// A batch body's array cut into runs of elements, as byte ranges into the body, and the batch's
/// other fields.
#[derive(Debug, PartialEq)]
pub struct SplitBatch {
    /// Runs of whole elements (`{…},{…}`), in order, without the commas between runs.
    pub runs: Vec<Range<usize>>,
    /// The batch's `explain`.
    pub explain: bool,
}

/// The fields a batch may carry after `transactions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tail {
    #[serde(default)]
    explain: bool,
}

/// Cuts `{"transactions": [...], ...}` into at most `parts` runs of about equal length; `None`
/// when the body has another shape (then it is to be parsed whole).
pub fn split_batch(body: &[u8], parts: usize) -> Option<SplitBatch> {
    let mut at = skip_ws(body, 0);
    for expected in [&b"{"[..], b"\"transactions\"", b":", b"["] {
        at = skip_ws(
            body,
            body.get(at..)?
                .starts_with(expected)
                .then_some(at + expected.len())?,
        );
    }
    // The fields after the array hold no `]` (only `explain`, a boolean), so the last one closes
    // it; if it does not, the runs or the tail fail to parse.
    let close = at + memchr::memrchr(b']', body.get(at..)?)?;
    let explain = tail(&body[close + 1..])?;
    let content = trim(body, at..close);
    let mut runs = Vec::with_capacity(parts);
    if !content.is_empty() {
        let mut start = content.start;
        for k in 1..parts.max(1) {
            let target = content.start + content.len() * k / parts;
            let Some(comma) = boundary(body, target.max(start + 1), content.end) else {
                break;
            };
            runs.push(trim(body, start..comma));
            start = comma + 1;
        }
        runs.push(trim(body, start..content.end));
    }
    Some(SplitBatch { runs, explain })
}

/// The first `,` at or after `from` (before `end`) whose neighbours, whitespace aside, are `}` and
/// `{`: between two objects, unless it is inside a string.
fn boundary(body: &[u8], from: usize, end: usize) -> Option<usize> {
    let mut at = from;
    while at < end {
        let comma = at + memchr::memchr(b',', &body[at..end])?;
        let before = body[..comma]
            .iter()
            .rev()
            .find(|b| !b.is_ascii_whitespace());
        let after = body[comma + 1..end]
            .iter()
            .find(|b| !b.is_ascii_whitespace());
        if before == Some(&b'}') && after == Some(&b'{') {
            return Some(comma);
        }
        at = comma + 1;
    }
    None
}

/// The batch's fields after the array (`}` or `, "explain": true}`), parsed strictly.
fn tail(rest: &[u8]) -> Option<bool> {
    let at = skip_ws(rest, 0);
    match rest.get(at)? {
        b'}' => rest[at + 1..]
            .iter()
            .all(u8::is_ascii_whitespace)
            .then_some(false),
        // At least one field after the comma: `{"transactions":[…],}` is not JSON.
        b',' if rest.get(skip_ws(rest, at + 1)) == Some(&b'"') => {
            let mut object = Vec::with_capacity(rest.len() - at);
            object.push(b'{');
            object.extend_from_slice(&rest[at + 1..]);
            serde_json::from_slice::<Tail>(&object)
                .ok()
                .map(|t| t.explain)
        }
        _ => None,
    }
}

fn skip_ws(body: &[u8], mut at: usize) -> usize {
    while body.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

fn trim(body: &[u8], range: Range<usize>) -> Range<usize> {
    let mut start = range.start;
    let mut end = range.end;
    while start < end && body[start].is_ascii_whitespace() {
        start += 1;
    }
    while end > start && body[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(body: &str, parts: usize) -> Option<(Vec<&str>, bool)> {
        split_batch(body.as_bytes(), parts).map(|s| {
            let runs = s.runs.iter().map(|r| &body[r.clone()]).collect();
            (runs, s.explain)
        })
    }

    #[test]
    fn runs_are_cut_between_objects_near_each_share() {
        let body = r#" { "transactions" : [ {"a": 1} , {"b": [2, 3]},{"c": 4},  {"d": 5} ] } "#;
        assert_eq!(
            pieces(body, 2),
            Some((
                vec![r#"{"a": 1} , {"b": [2, 3]}"#, r#"{"c": 4},  {"d": 5}"#],
                false
            ))
        );
        assert_eq!(
            pieces(body, 1),
            Some((
                vec![r#"{"a": 1} , {"b": [2, 3]},{"c": 4},  {"d": 5}"#],
                false
            ))
        );
        // More parts than elements: as many runs as there are boundaries after each share.
        let (runs, _) = pieces(body, 16).expect("plain");
        assert_eq!(runs.concat().matches('{').count(), 4);
        assert!(runs.len() <= 4, "{runs:?}");
        // The cut is a guess: here it lands inside a string, and the run fails to parse later.
        let tricky = r#"{"transactions":[{"note": "x},{y"}]}"#;
        assert_eq!(
            pieces(tricky, 2),
            Some((vec![r#"{"note": "x}"#, r#"{y"}"#], false))
        );
    }

    #[test]
    fn the_tail_is_parsed_strictly() {
        assert_eq!(
            pieces(r#"{"transactions":[1],"explain":true}"#, 2),
            Some((vec!["1"], true))
        );
        assert_eq!(pieces(r#"{"transactions":[ ] }"#, 2), Some((vec![], false)));
        for body in [
            r#"{"transactions":[1],"explain":true,"x":1}"#,
            r#"{"transactions":[1],"explain":true,}"#,
            r#"{"transactions":[1]} x"#,
            r#"{"transactions":[1]"#,
            r#"{"transactions":[1],}"#,
            r#"{"transactions":[1], }"#,
        ] {
            assert_eq!(pieces(body, 2), None, "{body}");
        }
        // A `]` after the array's: a run that is no array's contents (it then fails to parse).
        assert_eq!(
            pieces(r#"{"transactions":[1],"transactions":[2]}"#, 1),
            Some((vec![r#"1],"transactions":[2"#], false))
        );
    }

    #[test]
    fn any_other_shape_is_left_to_the_whole_parse() {
        for body in [
            r#"{"explain":true,"transactions":[1]}"#,
            r#"{"transactions":{}}"#,
            r#"["transactions"]"#,
            "",
        ] {
            assert_eq!(pieces(body, 2), None, "{body}");
        }
    }
}
