//! Server-sent event framing, shared by the usage tap and the MCP SSE transport: where an event
//! ends. Lines end in `\n`, `\r\n` or a lone `\r` (the HTML living standard's event stream
//! format); an event ends at an empty line.

/// Where the first complete event in `buf` ends (past its blank line), or `Err` with the start
/// of the last unfinished line: a search of the same bytes with more appended may resume there.
/// Jumps from line break to line break with `memchr`, so a chunk costs a few instructions per
/// line, not per byte.
pub(crate) fn event_end(buf: &[u8]) -> Result<usize, usize> {
    let mut line_start = 0;
    let mut at = 0;
    while let Some(offset) = memchr::memchr2(b'\n', b'\r', &buf[at..]) {
        let brk = at + offset;
        let newline = match (buf[brk], buf.get(brk + 1)) {
            (b'\n', _) => 1,
            (_, Some(b'\n')) => 2,
            (_, Some(_)) => 1,
            // A `\r` at the end may be the first half of `\r\n`: wait for the next byte.
            (_, None) => return Err(line_start),
        };
        if brk == line_start {
            return Ok(brk + newline);
        }
        at = brk + newline;
        line_start = at;
    }
    Err(line_start)
}

/// The lines of `event`, without their line endings (a `\r\n` yields an empty line between
/// its halves, which no field matches). Found with `memchr`, like [`event_end`].
pub(crate) fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(event);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr2(b'\n', b'\r', text) {
            Some(brk) => {
                rest = Some(&text[brk + 1..]);
                Some(&text[..brk])
            }
            None => {
                rest = None;
                (!text.is_empty()).then_some(text)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{event_end, lines};

    #[test]
    fn lines_split_at_every_line_ending() {
        let all: Vec<&[u8]> = lines(b"a\nb\r\nc\rd").collect();
        assert_eq!(all, [&b"a"[..], b"b", b"", b"c", b"d"]);
        assert_eq!(
            lines(b"data: x\n\n").collect::<Vec<_>>(),
            [&b"data: x"[..], b""]
        );
        assert_eq!(lines(b"").count(), 0);
    }

    #[test]
    fn events_end_at_a_blank_line_of_any_line_ending() {
        assert_eq!(event_end(b"data: a\n\nrest"), Ok(9));
        assert_eq!(event_end(b"data: a\r\n\r\nrest"), Ok(11));
        assert_eq!(event_end(b"data: a\r\rrest"), Ok(9));
        assert_eq!(event_end(b"data: a\n\r\ndata: b\n\n"), Ok(10));
        assert_eq!(event_end(b"\n"), Ok(1), "an empty event");
    }

    #[test]
    fn an_unfinished_event_says_where_its_last_line_starts() {
        assert_eq!(
            event_end(b"data: a\r\n\r"),
            Err(9),
            "\\r may be half of \\r\\n"
        );
        assert_eq!(event_end(b"data: a\n"), Err(8));
        assert_eq!(event_end(b"data: a\ndata: b"), Err(8));
        assert_eq!(event_end(b""), Err(0));
        // Resuming at that line with more bytes finds the same end as a search from the start.
        let whole = b"id: 1\ndata: a\r\n\r\nnext";
        for cut in 0..whole.len() {
            let resume = match event_end(&whole[..cut]) {
                Ok(_) => continue,
                Err(line) => line,
            };
            assert_eq!(
                event_end(&whole[resume..]).map(|end| resume + end),
                event_end(whole),
                "cut at {cut}"
            );
        }
    }
}
