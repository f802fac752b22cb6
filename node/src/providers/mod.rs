//! Provider adapters: one module per upstream kind that does not speak OpenAI's API, each a
//! set of pure translations (request, response, stream events, errors) with no I/O of its own.
//!
//! The proxy engine does the I/O for every kind alike (attempts, failover, timeouts, the
//! relay); a handler asks the adapter of the served upstream's kind to translate on the way
//! out and on the way back. The `openai` kind has no adapter: its bodies pass through byte for
//! byte, the model spliced.
//!
//! Never here: sockets, clocks, randomness. The time a translated answer carries (`created`)
//! is handed in, so a golden test's output is fixed.

pub(crate) mod anthropic;

/// Turns an upstream's streamed response body into OpenAI's chat completion chunks, a piece
/// at a time: `push` takes the bytes as they arrive (an event may be split anywhere) and
/// returns what the client gets for them (possibly nothing yet); `finish` flushes the end.
pub(crate) trait StreamTranslator: Send + 'static {
    fn push(&mut self, bytes: &[u8]) -> Vec<u8>;
    fn finish(&mut self) -> Vec<u8>;
}
