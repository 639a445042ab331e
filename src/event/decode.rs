//! Bytes → [`Event`], or a [`DecodeError`] that names the problem.
//!
//! The decoder enforces exactly `schemas/event.v1.schema.json`: an event the
//! schema accepts decodes, an event it rejects is an error (and so a dead
//! letter). `null` is not an absent field: the schema types every optional
//! field, so `"team": null` is invalid, as it is here.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{ActivityKind, Event, EventBody, FeedbackKind, Id, LossReason};
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
    let mut slots: Slots<'_> = Default::default();
    parse_fields(text, &mut slots)?;
    let fields = Fields(&slots);

    let event_id = fields.id("event_id")?;
    let type_name = fields.string("type")?;
    let occurred_at = fields.timestamp("occurred_at")?;
    let manager_id = fields.id("manager_id")?;
    let account_id = fields.id("account_id")?;
    let team = fields
        .optional_id("team")?
        .unwrap_or_else(|| Id::const_new("default"));

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

/// The fields of the event schema, in slot order. Any other field is
/// skipped unread (the schema allows extra fields).
const FIELD_NAMES: [&str; 19] = [
    "event_id",
    "type",
    "occurred_at",
    "manager_id",
    "account_id",
    "team",
    "opportunity_id",
    "amount",
    "stage",
    "expected_close",
    "reason",
    "competitor",
    "order_id",
    "activity",
    "previous_manager_id",
    "contract_id",
    "renewed",
    "kind",
    "score",
];

/// The slot of a field name: a `match`, which compiles to a comparison of
/// lengths and then bytes, not a walk over [`FIELD_NAMES`] (it runs for every
/// key of every event). A unit test keeps the two in step.
fn slot_of(name: &str) -> Option<usize> {
    Some(match name {
        "event_id" => 0,
        "type" => 1,
        "occurred_at" => 2,
        "manager_id" => 3,
        "account_id" => 4,
        "team" => 5,
        "opportunity_id" => 6,
        "amount" => 7,
        "stage" => 8,
        "expected_close" => 9,
        "reason" => 10,
        "competitor" => 11,
        "order_id" => 12,
        "activity" => 13,
        "previous_manager_id" => 14,
        "contract_id" => 15,
        "renewed" => 16,
        "kind" => 17,
        "score" => 18,
        _ => return None,
    })
}

/// One field's JSON value, as far as the schema cares: strings borrowed from
/// the payload where they need no unescaping, objects and arrays not kept.
#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Number(f64),
    Bool(bool),
    Null,
    Compound,
}

type Slots<'a> = [Option<Scalar<'a>>; FIELD_NAMES.len()];

/// Parses the payload's top-level object into the schema's slots in one
/// pass, without building a JSON tree. A repeated key keeps its last value,
/// as a JSON object does. The slots are filled in place: returned by value
/// they were copied several times per event.
fn parse_fields<'a>(text: &'a str, slots: &mut Slots<'a>) -> Result<(), DecodeError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let is_object = deserializer
        .deserialize_any(TopLevel(slots))
        .and_then(|is_object| deserializer.end().map(|()| is_object))
        .map_err(|e| DecodeError::NotJson(e.to_string()))?;
    if is_object {
        Ok(())
    } else {
        Err(DecodeError::NotObject)
    }
}

/// The top-level value: fills the slots and is `true` for an object,
/// `false` for anything else.
struct TopLevel<'s, 'a>(&'s mut Slots<'a>);

impl<'de> Visitor<'de> for TopLevel<'_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some(slot) = map.next_key_seed(KeySlot)? {
            match slot {
                Some(i) => self.0[i] = Some(map.next_value_seed(ScalarSeed)?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(false)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(false)
    }
}

/// A key: its slot, or `None` for a field the schema does not name.
struct KeySlot;

impl<'de> DeserializeSeed<'de> for KeySlot {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySlot {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(slot_of(key))
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(text)))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(value as f64))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(value as f64))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Compound)
    }
}

/// Typed access to the fields of one JSON object, each failure naming the field.
struct Fields<'s, 'a>(&'s Slots<'a>);

impl<'s, 'a> Fields<'s, 'a> {
    fn get(&self, field: &'static str) -> Option<&'s Scalar<'a>> {
        slot_of(field).and_then(|i| self.0[i].as_ref())
    }

    fn present(&self, field: &'static str) -> Result<&'s Scalar<'a>, DecodeError> {
        self.get(field).ok_or(DecodeError::MissingField(field))
    }

    fn string(&self, field: &'static str) -> Result<&'s str, DecodeError> {
        match self.present(field)? {
            Scalar::Str(text) => Ok(text),
            _ => Err(DecodeError::WrongType {
                field,
                expected: "a string",
            }),
        }
    }

    fn optional_string(&self, field: &'static str) -> Result<Option<Id>, DecodeError> {
        match self.get(field) {
            None => Ok(None),
            Some(_) => self.string(field).map(|s| Some(Id::from(s))),
        }
    }

    /// An identifier: a string of 1 to 256 characters.
    fn id(&self, field: &'static str) -> Result<Id, DecodeError> {
        let text = self.string(field)?;
        // A char is at least one byte, so an id of at most MAX_ID_CHARS
        // bytes (nearly all) is within the limit without counting chars.
        let too_long = text.len() > MAX_ID_CHARS && text.chars().count() > MAX_ID_CHARS;
        if text.is_empty() || too_long {
            let chars = text.chars().count();
            return Err(DecodeError::InvalidValue {
                field,
                problem: format!("length {chars} is outside 1..={MAX_ID_CHARS}"),
            });
        }
        Ok(Id::from(text))
    }

    fn optional_id(&self, field: &'static str) -> Result<Option<Id>, DecodeError> {
        match self.get(field) {
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
        match self.get(field) {
            None => Ok(None),
            Some(_) => self.timestamp(field).map(Some),
        }
    }

    /// A money amount: a finite number ≥ 0.
    fn amount(&self, field: &'static str) -> Result<f64, DecodeError> {
        let Scalar::Number(amount) = *self.present(field)? else {
            return Err(DecodeError::WrongType {
                field,
                expected: "a number",
            });
        };
        if amount < 0.0 || !amount.is_finite() {
            return Err(DecodeError::InvalidValue {
                field,
                problem: format!("{amount} is negative"),
            });
        }
        Ok(amount)
    }

    fn optional_amount(&self, field: &'static str) -> Result<Option<f64>, DecodeError> {
        match self.get(field) {
            None => Ok(None),
            Some(_) => self.amount(field).map(Some),
        }
    }

    fn boolean(&self, field: &'static str) -> Result<bool, DecodeError> {
        match self.present(field)? {
            Scalar::Bool(value) => Ok(*value),
            _ => Err(DecodeError::WrongType {
                field,
                expected: "true or false",
            }),
        }
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
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let Scalar::Number(number) = *value else {
            return Err(DecodeError::WrongType {
                field,
                expected: "an integer",
            });
        };
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

    #[test]
    fn every_field_name_has_its_own_slot() {
        for (i, name) in FIELD_NAMES.iter().enumerate() {
            assert_eq!(slot_of(name), Some(i), "{name}");
        }
        assert_eq!(slot_of("event"), None);
    }

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
