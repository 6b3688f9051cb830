//! What an OTLP/HTTP receiver's 2xx answer says: its `ExportMetricsServiceResponse`
//! (opentelemetry-proto `collector/metrics/v1`) may carry a partial success, the count
//! of data points it rejected and why. The bytes are the receiver's, so they are read
//! warily: an answer that does not decode is a full success (the status said so), the
//! count is held to what was sent, and the message is cut short and stripped of control
//! characters before it reaches a log line.

/// The most characters of a receiver's message that are kept.
const MESSAGE_MAX: usize = 500;

#[derive(Clone, PartialEq, prost::Message)]
struct ExportMetricsServiceResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<ExportMetricsPartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExportMetricsPartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_data_points: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// A receiver's partial success.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartialSuccess {
    /// Data points it rejected, at most `sent`.
    pub rejected: u64,
    /// Why, as it said (printable, at most 500 characters).
    pub message: String,
}

/// Reads the answer `body` to a request of `sent` data points.
pub fn read(body: &[u8], sent: u64) -> PartialSuccess {
    let Ok(response) = <ExportMetricsServiceResponse as prost::Message>::decode(body) else {
        return PartialSuccess::default();
    };
    let partial = response.partial_success.unwrap_or_default();
    PartialSuccess {
        rejected: u64::try_from(partial.rejected_data_points)
            .unwrap_or(0)
            .min(sent),
        message: partial
            .error_message
            .chars()
            .filter(|c| !c.is_control())
            .take(MESSAGE_MAX)
            .collect(),
    }
}

/// The answer a receiver gives (for tests).
pub fn encode(rejected: i64, message: &str) -> Vec<u8> {
    prost::Message::encode_to_vec(&ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: rejected,
            error_message: message.to_owned(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_success_says_how_many_points_and_why() {
        assert_eq!(
            read(&encode(3, "too old"), 100),
            PartialSuccess {
                rejected: 3,
                message: "too old".to_owned()
            }
        );
        assert_eq!(
            read(&[], 100),
            PartialSuccess::default(),
            "empty: full success"
        );
    }

    #[test]
    fn a_receiver_claiming_more_rejections_than_points_sent_is_held_to_what_was_sent() {
        assert_eq!(read(&encode(i64::MAX, ""), 40).rejected, 40);
    }

    #[test]
    fn a_negative_rejection_count_counts_as_none() {
        assert_eq!(read(&encode(-5, ""), 40).rejected, 0);
    }

    #[test]
    fn an_answer_that_is_not_protobuf_is_a_full_success_not_an_error() {
        for garbage in [
            &b"<html>ok</html>"[..],
            &[0xff; 64],
            &[0x0a, 0xff, 0xff, 0xff],
        ] {
            assert_eq!(read(garbage, 10), PartialSuccess::default(), "{garbage:?}");
        }
    }

    #[test]
    fn a_message_forging_log_lines_or_flooding_the_log_is_stripped_and_cut() {
        let forged = read(&encode(1, "x\n2026-01-01 ERROR forged\u{1b}[2J"), 10).message;
        assert!(!forged.chars().any(char::is_control), "{forged:?}");
        let flood = read(&encode(1, &"a".repeat(1 << 20)), 10).message;
        assert_eq!(flood.chars().count(), MESSAGE_MAX);
    }
}
