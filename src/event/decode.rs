//! Bytes → [`Event`], or a [`DecodeError`] that names the problem.
//!
//! The decoder enforces exactly `schemas/event.v1.schema.json`: an event the
//! schema accepts decodes, an event it rejects is an error (and so a dead
//! letter). `null` is not an absent field: the schema types every optional
//! field, so `"team": null` is invalid, as it is here.

use serde_json::{Map, Value};

use super::{ActivityKind, Event, EventBody, FeedbackKind, LossReason};
use crate::time::Timestamp;

/// Longest id or name the schema allows (`maxLength`).
const MAX_ID_CHARS: usize = 256;

/// Limits applied before parsing.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Payloads larger than this are rejected unread (`too_large`).
    pub max_event_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_event_bytes: 64 * 1024,
        }
    }
}

/// Why a message is not a valid event. The variant is the dead-letter
/// reason (a fixed set, safe as a metric label); the strings say which field
/// and what was wrong, for the dead-letter record and the logs.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not valid UTF-8 (first bad byte at {position})")]
    NotUtf8 { position: usize },
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is JSON but not an object")]
    NotObject,
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("field `{field}` has an invalid value: {problem}")]
    InvalidValue {
        field: &'static str,
        problem: String,
    },
}

impl DecodeError {
    /// The dead-letter reason code: one of a fixed set of labels.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotUtf8 { .. } => "not_utf8",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::NotObject => "not_object",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::InvalidValue { .. } => "invalid_value",
        }
    }

    /// Every code [`DecodeError::code`] can return, for pre-registering metrics.
    pub const CODES: [&'static str; 8] = [
        "too_large",
        "not_utf8",
        "not_json",
        "not_object",
        "missing_field",
        "wrong_type",
        "unknown_type",
        "invalid_value",
    ];
}

/// Decodes one message payload into an event.
///
/// # Errors
///
/// Returns a [`DecodeError`] for anything the event schema rejects, and for
/// payloads over [`DecodeLimits::max_event_bytes`].
pub fn decode(payload: &[u8], limits: DecodeLimits) -> Result<Event, DecodeError> {
    if payload.len() > limits.max_event_bytes {
        return Err(DecodeError::TooLarge {
            size: payload.len(),
            limit: limits.max_event_bytes,
        });
    }
    let text = std::str::from_utf8(payload).map_err(|e| DecodeError::NotUtf8 {
        position: e.valid_up_to(),
    })?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(DecodeError::NotObject);
    };
    let fields = Fields(&fields);

    let event_id = fields.id("event_id")?;
    let type_name = fields.string("type")?;
    let occurred_at = fields.timestamp("occurred_at")?;
    let manager_id = fields.id("manager_id")?;
    let account_id = fields.id("account_id")?;
    let team = fields
        .optional_id("team")?
        .unwrap_or_else(|| "default".to_owned());

    let body = match type_name {
        "opportunity_created" => EventBody::OpportunityCreated {
            opportunity_id: fields.id("opportunity_id")?,
            amount: fields.amount("amount")?,
        },
        "opportunity_updated" => EventBody::OpportunityUpdated {
            opportunity_id: fields.id("opportunity_id")?,
            amount: fields.optional_amount("amount")?,
            stage: fields.optional_string("stage")?,
            expected_close: fields.optional_timestamp("expected_close")?,
        },
        "opportunity_won" => EventBody::OpportunityWon {
            opportunity_id: fields.id("opportunity_id")?,
            amount: fields.amount("amount")?,
        },
        "opportunity_lost" => EventBody::OpportunityLost {
            opportunity_id: fields.id("opportunity_id")?,
            amount: fields.amount("amount")?,
            reason: fields.choice("reason", LossReason::parse)?,
            competitor: fields.optional_string("competitor")?,
        },
        "opportunity_withdrawn" => EventBody::OpportunityWithdrawn {
            opportunity_id: fields.id("opportunity_id")?,
            amount: fields.amount("amount")?,
        },
        "order_placed" => EventBody::OrderPlaced {
            order_id: fields.id("order_id")?,
            amount: fields.amount("amount")?,
        },
        "activity_logged" => EventBody::ActivityLogged {
            activity: fields.choice("activity", ActivityKind::parse)?,
        },
        "account_assigned" => EventBody::AccountAssigned {
            previous_manager_id: fields.optional_id("previous_manager_id")?,
        },
        "contract_ended" => EventBody::ContractEnded {
            contract_id: fields.id("contract_id")?,
            renewed: fields.boolean("renewed")?,
            amount: fields.amount("amount")?,
        },
        "customer_feedback" => EventBody::CustomerFeedback {
            kind: fields.choice("kind", FeedbackKind::parse)?,
            score: fields.optional_score("score")?,
        },
        other => return Err(DecodeError::UnknownType(truncate(other, 64))),
    };

    Ok(Event {
        event_id,
        occurred_at,
        manager_id,
        account_id,
        team,
        body,
    })
}

/// Typed access to the fields of one JSON object, each failure naming the field.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn present(&self, field: &'static str) -> Result<&'a Value, DecodeError> {
        self.0.get(field).ok_or(DecodeError::MissingField(field))
    }

    fn string(&self, field: &'static str) -> Result<&'a str, DecodeError> {
        self.present(field)?.as_str().ok_or(DecodeError::WrongType {
            field,
            expected: "a string",
        })
    }

    fn optional_string(&self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(_) => self.string(field).map(|s| Some(s.to_owned())),
        }
    }

    /// An identifier: a string of 1 to 256 characters.
    fn id(&self, field: &'static str) -> Result<String, DecodeError> {
        let text = self.string(field)?;
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_ID_CHARS {
            return Err(DecodeError::InvalidValue {
                field,
                problem: format!("length {chars} is outside 1..={MAX_ID_CHARS}"),
            });
        }
        Ok(text.to_owned())
    }

    fn optional_id(&self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(_) => self.id(field).map(Some),
        }
    }

    fn timestamp(&self, field: &'static str) -> Result<Timestamp, DecodeError> {
        let text = self.string(field)?;
        Timestamp::parse_rfc3339(text).ok_or_else(|| DecodeError::InvalidValue {
            field,
            problem: format!("`{}` is not an RFC 3339 timestamp", truncate(text, 64)),
        })
    }

    fn optional_timestamp(&self, field: &'static str) -> Result<Option<Timestamp>, DecodeError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(_) => self.timestamp(field).map(Some),
        }
    }

    /// A money amount: a finite number ≥ 0.
    fn amount(&self, field: &'static str) -> Result<f64, DecodeError> {
        let amount = self
            .present(field)?
            .as_f64()
            .ok_or(DecodeError::WrongType {
                field,
                expected: "a number",
            })?;
        if amount < 0.0 || !amount.is_finite() {
            return Err(DecodeError::InvalidValue {
                field,
                problem: format!("{amount} is negative"),
            });
        }
        Ok(amount)
    }

    fn optional_amount(&self, field: &'static str) -> Result<Option<f64>, DecodeError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(_) => self.amount(field).map(Some),
        }
    }

    fn boolean(&self, field: &'static str) -> Result<bool, DecodeError> {
        self.present(field)?
            .as_bool()
            .ok_or(DecodeError::WrongType {
                field,
                expected: "true or false",
            })
    }

    /// A string from a closed set.
    fn choice<T>(
        &self,
        field: &'static str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let text = self.string(field)?;
        parse(text).ok_or_else(|| DecodeError::InvalidValue {
            field,
            problem: format!("`{}` is not one of the allowed values", truncate(text, 64)),
        })
    }

    /// A feedback score: an integer 1 to 5 (`4.0` is an integer in JSON Schema).
    fn optional_score(&self, field: &'static str) -> Result<Option<u8>, DecodeError> {
        let Some(value) = self.0.get(field) else {
            return Ok(None);
        };
        let number = value.as_f64().ok_or(DecodeError::WrongType {
            field,
            expected: "an integer",
        })?;
        if number.fract() != 0.0 {
            return Err(DecodeError::WrongType {
                field,
                expected: "an integer",
            });
        }
        if !(1.0..=5.0).contains(&number) {
            return Err(DecodeError::InvalidValue {
                field,
                problem: format!("{number} is outside 1..=5"),
            });
        }
        Ok(Some(number as u8))
    }
}

/// At most `max` characters of untrusted text, for error messages.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_str(text: &str) -> Result<Event, DecodeError> {
        decode(text.as_bytes(), DecodeLimits::default())
    }

    const HEAD: &str = r#""event_id":"ev-1","occurred_at":"2025-03-01T09:30:00Z","manager_id":"kam-1","account_id":"acc-1""#;

    fn with(rest: &str) -> String {
        format!("{{{HEAD},{rest}}}")
    }

    #[test]
    fn decodes_every_type() {
        let cases = [
            r#""type":"opportunity_created","opportunity_id":"o1","amount":1000"#,
            r#""type":"opportunity_updated","opportunity_id":"o1","amount":900.5,"stage":"proposal","expected_close":"2025-04-01T00:00:00Z""#,
            r#""type":"opportunity_updated","opportunity_id":"o1""#,
            r#""type":"opportunity_won","opportunity_id":"o1","amount":900"#,
            r#""type":"opportunity_lost","opportunity_id":"o1","amount":900,"reason":"competitor","competitor":"Acme""#,
            r#""type":"opportunity_withdrawn","opportunity_id":"o1","amount":0"#,
            r#""type":"order_placed","order_id":"ord-1","amount":12.5"#,
            r#""type":"activity_logged","activity":"visit""#,
            r#""type":"account_assigned","previous_manager_id":"kam-0""#,
            r#""type":"account_assigned""#,
            r#""type":"contract_ended","contract_id":"c1","renewed":false,"amount":5000"#,
            r#""type":"customer_feedback","kind":"complaint","score":2"#,
            r#""type":"customer_feedback","kind":"revisit""#,
        ];
        for case in cases {
            let event = decode_str(&with(case)).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(event.team, "default");
            assert_eq!(event.occurred_at.to_string(), "2025-03-01T09:30:00Z");
        }
    }

    #[test]
    fn keeps_team_and_ignores_unknown_fields() {
        let event = decode_str(&with(
            r#""type":"activity_logged","activity":"call","team":"east","crm_extra":{"x":1}"#,
        ))
        .unwrap();
        assert_eq!(event.team, "east");
        assert_eq!(
            event.body,
            EventBody::ActivityLogged {
                activity: ActivityKind::Call
            }
        );
    }

    #[test]
    fn rejects_each_invalid_class_with_its_reason() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json at all".to_vec(), "not_json"),
            (b"{\"event_id\":".to_vec(), "not_json"),
            (b"[1,2,3]".to_vec(), "not_object"),
            (vec![0xff, 0xfe, 0x00, 0x01], "not_utf8"),
            (with(r#""type":"order_placed","order_id":"o"}"#).into_bytes(), "not_json"),
            (format!("{{{HEAD}}}").into_bytes(), "missing_field"),
            (with(r#""type":"order_placed","amount":5"#).into_bytes(), "missing_field"),
            (with(r#""type":"order_placed","order_id":"o","amount":"5""#).into_bytes(), "wrong_type"),
            (with(r#""type":"order_placed","order_id":"o","amount":-5"#).into_bytes(), "invalid_value"),
            (with(r#""type":"order_cancelled""#).into_bytes(), "unknown_type"),
            (with(r#""type":7"#).into_bytes(), "wrong_type"),
            (with(r#""type":"activity_logged","activity":"lunch""#).into_bytes(), "invalid_value"),
            (with(r#""type":"activity_logged","activity":"visit","team":null"#).into_bytes(), "wrong_type"),
            (with(r#""type":"activity_logged","activity":"visit","team":"""#).into_bytes(), "invalid_value"),
            (with(r#""type":"customer_feedback","kind":"revisit","score":6"#).into_bytes(), "invalid_value"),
            (with(r#""type":"customer_feedback","kind":"revisit","score":2.5"#).into_bytes(), "wrong_type"),
            (with(r#""type":"contract_ended","contract_id":"c","renewed":"no","amount":1"#).into_bytes(), "wrong_type"),
            (
                r#"{"event_id":"e","type":"activity_logged","activity":"visit","occurred_at":"last tuesday","manager_id":"m","account_id":"a"}"#
                    .as_bytes()
                    .to_vec(),
                "invalid_value",
            ),
            (vec![b' '; 70 * 1024], "too_large"),
        ];
        for (payload, code) in cases {
            let err = decode(&payload, DecodeLimits::default())
                .expect_err(&String::from_utf8_lossy(&payload[..payload.len().min(80)]));
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let err = decode_str(&with(
            r#""type":"order_placed","order_id":"o","amount":"5""#,
        ))
        .unwrap_err();
        assert_eq!(err.to_string(), "field `amount` must be a number");
        let err = decode_str(&with(r#""type":"order_placed","amount":5"#)).unwrap_err();
        assert_eq!(err.to_string(), "required field `order_id` is missing");
    }

    #[test]
    fn overlong_ids_are_invalid() {
        let long = "x".repeat(257);
        let err = decode_str(&with(&format!(
            r#""type":"order_placed","order_id":"{long}","amount":1"#
        )))
        .unwrap_err();
        assert_eq!(err.code(), "invalid_value");
    }
}
