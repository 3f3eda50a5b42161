//! geth v1.13 JSON log lines (`--log.format json`): `{"t":…,"lvl":…,"msg":…, …}`.
//! Attribute values are strings, numbers included (`"number":"28"`).

use serde_json::{Map, Value};

/// Longest line accepted from geth; longer lines are skipped, not buffered.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: String,
    pub msg: String,
    /// Every attribute except `t`, `lvl` and `msg`.
    pub fields: Map<String, Value>,
}

impl LogLine {
    /// Parses one JSON log line; `None` for anything else (geth prints a few plain
    /// lines, e.g. `Fatal: …`, even in JSON mode).
    pub fn parse(line: &str) -> Option<Self> {
        let Value::Object(mut fields) = serde_json::from_str::<Value>(line.trim()).ok()? else {
            return None;
        };
        let msg = match fields.remove("msg")? {
            Value::String(s) => s,
            _ => return None,
        };
        let level = match fields.remove("lvl") {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        fields.remove("t");
        Some(Self { level, msg, fields })
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// A numeric attribute, whether geth wrote it as a string or a number.
    pub fn u64(&self, key: &str) -> Option<u64> {
        match self.fields.get(key)? {
            Value::String(s) => s.replace(',', "").parse().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self.level.as_str(), "error" | "eror" | "crit" | "fatal")
    }

    /// `msg key=value …` for humans.
    pub fn human(&self) -> String {
        let mut out = self.msg.clone();
        for (key, value) in &self.fields {
            out.push(' ');
            out.push_str(key);
            out.push('=');
            match value {
                Value::String(s) if s.contains(' ') => out.push_str(&format!("{s:?}")),
                Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_geth_json_with_string_numbers() {
        let line = r#"{"t":"2026-11-29T20:00:00Z","lvl":"info","msg":"Writing cached state to disk","block":"29","hash":"0xabc","root":"0xdef"}"#;
        let parsed = LogLine::parse(line).unwrap();
        assert_eq!(parsed.msg, "Writing cached state to disk");
        assert_eq!(parsed.level, "info");
        assert_eq!(parsed.u64("block"), Some(29));
        assert_eq!(parsed.str("hash"), Some("0xabc"));
        assert_eq!(
            parsed.human(),
            "Writing cached state to disk block=29 hash=0xabc root=0xdef"
        );
    }

    #[test]
    fn rejects_non_log_input() {
        for bad in [
            "",
            "Fatal: oops",
            "[1,2]",
            r#"{"lvl":"info"}"#,
            r#"{"msg":5}"#,
            "{\"msg\":",
        ] {
            assert_eq!(LogLine::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_tolerate_separators_and_garbage() {
        let l = LogLine::parse(r#"{"msg":"x","a":"1,024","b":7,"c":"no","d":"-1"}"#).unwrap();
        assert_eq!(l.u64("a"), Some(1024));
        assert_eq!(l.u64("b"), Some(7));
        assert_eq!(l.u64("c"), None);
        assert_eq!(l.u64("d"), None);
    }
}
