//! An OpenAI-compatible streamed answer (server-sent events), read as it
//! arrives: each token with the log-probability the server reports, the
//! finish reason, the usage, and the arrival time of every token, from
//! which the time to first token and the tokens per second follow.

use serde_json::Value;

/// What a stream said, and when.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub model: Option<String>,
    /// Token texts, in order.
    pub tokens: Vec<String>,
    /// The log-probability the server reported for each token (NaN where it
    /// gave none).
    pub logprobs: Vec<f64>,
    /// Seconds since the request was sent at which each token arrived.
    pub arrivals: Vec<f64>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub done: bool,
}

/// Larger events than this are not an inference stream.
pub const MAX_EVENT: usize = 256 * 1024;
/// Nor more tokens than this.
pub const MAX_TOKENS: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StreamError {
    #[error("an event of more than {MAX_EVENT} bytes")]
    EventTooLarge,
    #[error("more than {MAX_TOKENS} tokens")]
    TooManyTokens,
    #[error("an event that is not JSON: {0}")]
    NotJson(String),
    #[error("the server reported an error: {0}")]
    Upstream(String),
}

/// Reads a stream chunk by chunk (`feed` with each network read and the
/// seconds since the request was sent).
#[derive(Debug, Default)]
pub struct StreamReader {
    buf: Vec<u8>,
    /// Where the search for the next event's end resumes.
    scanned: usize,
    pub observed: Observed,
}

impl StreamReader {
    pub fn feed(&mut self, bytes: &[u8], at: f64) -> Result<(), StreamError> {
        self.buf.extend_from_slice(bytes);
        // Each byte is looked at once, however the stream is cut.
        while let Some(end) = find_event_end(&self.buf, self.scanned) {
            let event: Vec<u8> = self.buf.drain(..end.0 + end.1).collect();
            self.scanned = 0;
            self.event(&event[..end.0], at)?;
        }
        self.scanned = self.buf.len().saturating_sub(3);
        if self.buf.len() > MAX_EVENT {
            return Err(StreamError::EventTooLarge);
        }
        Ok(())
    }

    fn event(&mut self, event: &[u8], at: f64) -> Result<(), StreamError> {
        let text = String::from_utf8_lossy(event);
        let data: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        if data.is_empty() {
            return Ok(());
        }
        if data.trim() == "[DONE]" {
            self.observed.done = true;
            return Ok(());
        }
        let v: Value = serde_json::from_str(&data)
            .map_err(|e| StreamError::NotJson(format!("{e}: {}", truncate(&data))))?;
        if let Some(err) = v.get("error") {
            return Err(StreamError::Upstream(truncate(&err.to_string())));
        }
        self.chunk(&v, at)
    }

    fn chunk(&mut self, v: &Value, at: f64) -> Result<(), StreamError> {
        let o = &mut self.observed;
        if o.model.is_none() {
            o.model = v.get("model").and_then(Value::as_str).map(String::from);
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            o.prompt_tokens = u.get("prompt_tokens").and_then(Value::as_u64);
            o.completion_tokens = u.get("completion_tokens").and_then(Value::as_u64);
        }
        let Some(choice) = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Ok(());
        };
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            o.finish_reason = Some(f.to_string());
        }
        let lp = choice.get("logprobs");
        let push = |o: &mut Observed, token: String, logprob: f64| {
            o.tokens.push(token);
            o.logprobs.push(logprob);
            o.arrivals.push(at);
        };
        // Chat: logprobs.content[] = {token, logprob}.
        if let Some(content) = lp.and_then(|l| l.get("content")).and_then(Value::as_array) {
            for t in content {
                let token = t.get("token").and_then(Value::as_str).unwrap_or_default();
                let logprob = t.get("logprob").and_then(Value::as_f64).unwrap_or(f64::NAN);
                push(o, token.to_string(), logprob);
            }
        } else if let Some(tokens) = lp.and_then(|l| l.get("tokens")).and_then(Value::as_array) {
            // Completions: logprobs.tokens[] and token_logprobs[].
            let values = lp
                .and_then(|l| l.get("token_logprobs"))
                .and_then(Value::as_array);
            for (i, t) in tokens.iter().enumerate() {
                let logprob = values
                    .and_then(|v| v.get(i))
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NAN);
                push(o, t.as_str().unwrap_or_default().to_string(), logprob);
            }
        } else {
            // No log-probabilities: a token per non-empty text piece.
            let text = choice
                .get("delta")
                .and_then(|d| d.get("content"))
                .or_else(|| choice.get("text"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !text.is_empty() {
                push(o, text.to_string(), f64::NAN);
            }
        }
        if o.tokens.len() > MAX_TOKENS {
            return Err(StreamError::TooManyTokens);
        }
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The end of the first event in `buf`, searching from `from`: (its
/// length, the separator's).
fn find_event_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    for i in from..buf.len() {
        if buf[i..].starts_with(b"\n\n") {
            return Some((i, 2));
        }
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
    }
    None
}

impl Observed {
    /// Seconds from the request to the first token.
    pub fn ttft(&self) -> Option<f64> {
        self.arrivals.first().copied()
    }

    /// Tokens per second after the first token: the tokens that came after
    /// it over the time they took. None with fewer than two arrival times.
    pub fn tps(&self) -> Option<f64> {
        let first = *self.arrivals.first()?;
        let last = *self.arrivals.last()?;
        let after = self.arrivals.iter().filter(|t| **t > first).count();
        (last > first && after > 0).then(|| after as f64 / (last - first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_and_completion_chunks_in_pieces() {
        let mut r = StreamReader::default();
        let chat = "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\" a\"},\"logprobs\":{\"content\":[{\"token\":\" a\",\"logprob\":-0.5}]}}]}\n\n";
        let (x, y) = chat.split_at(17);
        r.feed(x.as_bytes(), 0.1).unwrap();
        r.feed(y.as_bytes(), 0.2).unwrap();
        r.feed(b"data: {\"choices\":[{\"text\":\" b\",\"logprobs\":{\"tokens\":[\" b\"],\"token_logprobs\":[-1.5]},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\r\n\r\ndata: [DONE]\n\n", 0.6)
            .unwrap();
        let o = &r.observed;
        assert_eq!(o.model.as_deref(), Some("m"));
        assert_eq!(o.tokens, vec![" a", " b"]);
        assert_eq!(o.logprobs, vec![-0.5, -1.5]);
        assert_eq!(o.finish_reason.as_deref(), Some("length"));
        assert_eq!((o.prompt_tokens, o.completion_tokens), (Some(3), Some(2)));
        assert!(o.done);
        assert_eq!(o.ttft(), Some(0.2));
        assert!((o.tps().unwrap() - 2.5).abs() < 1e-9);
    }

    #[test]
    fn bad_streams_are_errors() {
        let mut r = StreamReader::default();
        assert!(matches!(
            r.feed(b"data: {oops\n\n", 0.0),
            Err(StreamError::NotJson(_))
        ));
        let mut r = StreamReader::default();
        assert!(matches!(
            r.feed(b"data: {\"error\":{\"message\":\"x\"}}\n\n", 0.0),
            Err(StreamError::Upstream(_))
        ));
        let mut r = StreamReader::default();
        assert_eq!(
            r.feed(&vec![b'a'; MAX_EVENT + 1], 0.0),
            Err(StreamError::EventTooLarge)
        );
    }
}
