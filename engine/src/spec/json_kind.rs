//! The one name of a JSON value's kind for error messages, in the three spellings the
//! messages use: Go's (`bool`, as encoding/json and the reference plugins say it), a
//! user's (`boolean`), and a sentence's (`a boolean`, `an integer`).

use serde_json::Value;

/// How a message spells a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `bool`, `number`, `string`, `array`, `object`, `null`.
    Go,
    /// `boolean`, `number`, ...: Go's with the boolean written out.
    Word,
    /// `a boolean`, `a number`, `an array`, ...
    Article,
    /// [`Spelling::Article`], with whole numbers as `an integer`.
    ArticleInt,
}

/// The kind of `v`, spelled `s`.
pub fn json_kind(v: &Value, s: Spelling) -> &'static str {
    use Spelling::*;
    match (v, s) {
        (Value::Null, _) => "null",
        (Value::Bool(_), Go) => "bool",
        (Value::Bool(_), Word) => "boolean",
        (Value::Bool(_), Article | ArticleInt) => "a boolean",
        (Value::Number(n), ArticleInt) if n.is_i64() || n.is_u64() => "an integer",
        (Value::Number(_), Go | Word) => "number",
        (Value::Number(_), Article | ArticleInt) => "a number",
        (Value::String(_), Go | Word) => "string",
        (Value::String(_), Article | ArticleInt) => "a string",
        (Value::Array(_), Go | Word) => "array",
        (Value::Array(_), Article | ArticleInt) => "an array",
        (Value::Object(_), Go | Word) => "object",
        (Value::Object(_), Article | ArticleInt) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spellings() {
        assert_eq!(json_kind(&json!(true), Spelling::Go), "bool");
        assert_eq!(json_kind(&json!(true), Spelling::Word), "boolean");
        assert_eq!(json_kind(&json!(1), Spelling::Article), "a number");
        assert_eq!(json_kind(&json!(1), Spelling::ArticleInt), "an integer");
        assert_eq!(json_kind(&json!(1.5), Spelling::ArticleInt), "a number");
        assert_eq!(json_kind(&json!([]), Spelling::Article), "an array");
        assert_eq!(json_kind(&json!(null), Spelling::Go), "null");
    }
}
