//! OTLP/JSON encoding of an `ExportTraceServiceRequest`.
//!
//! OTLP/JSON is the protobuf JSON mapping with OTLP's exceptions: field
//! names in lowerCamelCase, `traceId`/`spanId`/`parentSpanId` as lowercase
//! hex (not base64), enums as integers, and 64-bit integers (times,
//! `intValue`) as decimal strings.

use std::borrow::Cow;
use std::fmt;

use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::context::encode_hex;
use crate::trace::{AttributeValue, SpanData, StatusCode};

/// The instrumentation scope every span is reported under.
pub const SCOPE_NAME: &str = "tollgate";

/// One request body: every span under one resource and one scope.
pub(crate) fn export_request(resource: &[(String, AttributeValue)], spans: &[SpanData]) -> Vec<u8> {
    let request = ExportRequest {
        resource_spans: [ResourceSpans {
            resource: Resource {
                attributes: Attributes(resource),
            },
            scope_spans: [ScopeSpans {
                scope: Scope {
                    name: SCOPE_NAME,
                    version: env!("CARGO_PKG_VERSION"),
                },
                spans: Spans(spans),
            }],
        }],
    };
    // Serializing to memory fails only on a serializer error, which these
    // types never raise (map keys are strings).
    serde_json::to_vec(&request).unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource<'a> {
    attributes: Attributes<'a, String>,
}

#[derive(Serialize)]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: Spans<'a>,
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

struct Spans<'a>(&'a [SpanData]);

impl Serialize for Spans<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for span in self.0 {
            seq.serialize_element(&JsonSpan(span))?;
        }
        seq.end()
    }
}

struct JsonSpan<'a>(&'a SpanData);

impl Serialize for JsonSpan<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let span = self.0;
        let mut st = s.serialize_struct("Span", 9)?;
        st.serialize_field("traceId", &Hex(&span.trace_id))?;
        st.serialize_field("spanId", &Hex(&span.span_id))?;
        if let Some(parent) = &span.parent_span_id {
            st.serialize_field("parentSpanId", &Hex(parent))?;
        }
        st.serialize_field("name", &span.name)?;
        st.serialize_field("kind", &(span.kind as u8))?;
        st.serialize_field("startTimeUnixNano", &Decimal(span.start_unix_nano))?;
        st.serialize_field("endTimeUnixNano", &Decimal(span.end_unix_nano))?;
        if !span.attributes.is_empty() {
            st.serialize_field("attributes", &Attributes(&span.attributes))?;
        }
        if span.status != StatusCode::Unset {
            st.serialize_field(
                "status",
                &Status {
                    code: span.status as u8,
                    message: span.status_message.as_deref(),
                },
            )?;
        }
        st.end()
    }
}

#[derive(Serialize)]
struct Status<'a> {
    code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// Lowercase hex of a trace or span id.
struct Hex<'a>(&'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 32];
        let out = &mut buf[..self.0.len() * 2];
        encode_hex(self.0, out);
        s.serialize_str(std::str::from_utf8(out).map_err(serde::ser::Error::custom)?)
    }
}

/// A 64-bit integer as a JSON string.
struct Decimal<T>(T);

impl<T: fmt::Display> Serialize for Decimal<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// `[{"key": …, "value": {…}}]`.
struct Attributes<'a, K>(&'a [(K, AttributeValue)]);

impl<K: AsRef<str>> Serialize for Attributes<'_, K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (key, value) in self.0 {
            seq.serialize_element(&KeyValue {
                key: key.as_ref(),
                value: AnyValue(value),
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: AnyValue<'a>,
}

struct AnyValue<'a>(&'a AttributeValue);

impl Serialize for AnyValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self.0 {
            AttributeValue::String(v) => map.serialize_entry("stringValue", v)?,
            AttributeValue::Int(v) => map.serialize_entry("intValue", &Decimal(v))?,
            AttributeValue::Bool(v) => map.serialize_entry("boolValue", v)?,
            // JSON has no NaN or infinity; the protobuf JSON mapping spells
            // them as strings.
            AttributeValue::Double(v) if v.is_finite() => map.serialize_entry("doubleValue", v)?,
            AttributeValue::Double(v) => {
                let text: Cow<'static, str> = if v.is_nan() {
                    "NaN".into()
                } else if *v > 0.0 {
                    "Infinity".into()
                } else {
                    "-Infinity".into()
                };
                map.serialize_entry("doubleValue", &text)?
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpanKind;
    use serde_json::json;

    #[test]
    fn encodes_the_otlp_json_shape() {
        let spans = [
            SpanData {
                trace_id: [0xab; 16],
                span_id: [0x01; 8],
                parent_span_id: Some([0x02; 8]),
                name: "GET /users/{id}".into(),
                kind: SpanKind::Server,
                start_unix_nano: 1_700_000_000_000_000_000,
                end_unix_nano: 1_700_000_000_000_001_000,
                attributes: vec![
                    ("http.request.method".into(), AttributeValue::from("GET")),
                    (
                        "http.response.status_code".into(),
                        AttributeValue::from(503u16),
                    ),
                    ("tollgate.cancelled".into(), AttributeValue::Bool(false)),
                    ("ratio".into(), AttributeValue::Double(0.5)),
                    ("nan".into(), AttributeValue::Double(f64::NAN)),
                ],
                status: StatusCode::Error,
                status_message: Some("boom".into()),
            },
            SpanData {
                trace_id: [0xab; 16],
                span_id: [0x03; 8],
                parent_span_id: None,
                name: "upstream".into(),
                kind: SpanKind::Client,
                start_unix_nano: 5,
                end_unix_nano: 6,
                attributes: Vec::new(),
                status: StatusCode::Unset,
                status_message: None,
            },
        ];
        let resource = vec![("service.name".to_owned(), AttributeValue::from("gw"))];
        let body: serde_json::Value =
            serde_json::from_slice(&export_request(&resource, &spans)).expect("json");
        let expected = json!({
            "resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "gw"}}]},
                "scopeSpans": [{
                    "scope": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")},
                    "spans": [
                        {
                            "traceId": "abababababababababababababababab",
                            "spanId": "0101010101010101",
                            "parentSpanId": "0202020202020202",
                            "name": "GET /users/{id}",
                            "kind": 2,
                            "startTimeUnixNano": "1700000000000000000",
                            "endTimeUnixNano": "1700000000000001000",
                            "attributes": [
                                {"key": "http.request.method", "value": {"stringValue": "GET"}},
                                {"key": "http.response.status_code", "value": {"intValue": "503"}},
                                {"key": "tollgate.cancelled", "value": {"boolValue": false}},
                                {"key": "ratio", "value": {"doubleValue": 0.5}},
                                {"key": "nan", "value": {"doubleValue": "NaN"}}
                            ],
                            "status": {"code": 2, "message": "boom"}
                        },
                        {
                            "traceId": "abababababababababababababababab",
                            "spanId": "0303030303030303",
                            "name": "upstream",
                            "kind": 3,
                            "startTimeUnixNano": "5",
                            "endTimeUnixNano": "6"
                        }
                    ]
                }]
            }]
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn strings_are_escaped() {
        let spans = [SpanData {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: None,
            name: "a \"quoted\"\n name".into(),
            kind: SpanKind::Internal,
            start_unix_nano: 0,
            end_unix_nano: 0,
            attributes: vec![("k".into(), AttributeValue::from("\u{1}\\"))],
            status: StatusCode::Unset,
            status_message: None,
        }];
        let body: serde_json::Value =
            serde_json::from_slice(&export_request(&[], &spans)).expect("json");
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["name"], "a \"quoted\"\n name");
        assert_eq!(span["attributes"][0]["value"]["stringValue"], "\u{1}\\");
    }
}
