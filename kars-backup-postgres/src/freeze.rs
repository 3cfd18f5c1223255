//! Rewrites the data section of a plain dump loaded into a new staging database in one
//! transaction: each `COPY table (…) FROM stdin;` becomes `… FROM stdin WITH (FREEZE);`, so the
//! rows are written frozen and all-visible (their hint bits set), and the scans that verify the
//! staging database (amcheck, row counts) do not have to set them page by page.
//!
//! `COPY FREEZE` needs the table to have been created in the same transaction, which holds for a
//! whole-dump load into an empty database. Only a `COPY` right after pg_dump's
//! `-- Data for Name: T; Type: TABLE DATA; Schema: S;` comment, into exactly `S.T` (unquoted
//! names), is rewritten: a dump that loads partitions through their root
//! (`--load-via-partition-root`, which `COPY FREEZE` refuses) or anything unexpected is passed on
//! unchanged. Streaming: only a line that may need rewriting is held, up to [`MAX_HELD`] bytes.

/// The longest partial line kept back to decide whether it is a `COPY` line.
const MAX_HELD: usize = 1 << 20;

const COPY: &[u8] = b"COPY ";
const FROM_STDIN: &[u8] = b" FROM stdin;";
const DATA_FOR: &[u8] = b"-- Data for Name: ";
const END_OF_DATA: &[u8] = b"\\.";

/// The rewriting state between chunks of the dump.
#[derive(Debug, Default)]
pub(crate) struct FreezeCopies {
    /// The start of a line that may need rewriting.
    held: Vec<u8>,
    /// Passing the rest of the current line through unchanged.
    mid_line: bool,
    /// Inside a `COPY` block (until its `\.` line).
    in_copy: bool,
    /// `schema.table` from the last `-- Data for Name:` comment.
    data_for: Option<String>,
    /// How many `COPY` statements were rewritten.
    pub(crate) rewritten: usize,
}

impl FreezeCopies {
    /// Appends the rewritten `chunk` to `out`.
    pub(crate) fn push(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            if self.mid_line {
                match newline {
                    Some(i) => {
                        out.extend_from_slice(&chunk[..=i]);
                        chunk = &chunk[i + 1..];
                        self.mid_line = false;
                    }
                    None => {
                        out.extend_from_slice(chunk);
                        return;
                    }
                }
                continue;
            }
            match newline {
                Some(i) => {
                    let mut held = std::mem::take(&mut self.held);
                    if held.is_empty() {
                        self.line(&chunk[..i], out);
                    } else {
                        held.extend_from_slice(&chunk[..i]);
                        self.line(&held, out);
                        held.clear();
                    }
                    self.held = held;
                    out.push(b'\n');
                    chunk = &chunk[i + 1..];
                }
                None => {
                    self.held.extend_from_slice(chunk);
                    if self.held.len() > MAX_HELD || !self.may_matter(&self.held) {
                        out.extend_from_slice(&self.held);
                        self.held.clear();
                        self.mid_line = true;
                        // A line passed through unread: no rewrite may depend on it.
                        if !self.in_copy {
                            self.data_for = None;
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Appends what is still held (a last line without a newline) to `out`.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
        self.mid_line = false;
    }

    /// Whether a partial line may still turn out to be one that changes the state.
    fn may_matter(&self, partial: &[u8]) -> bool {
        let prefix = |p: &[u8]| p.starts_with(partial) || partial.starts_with(p);
        if self.in_copy {
            END_OF_DATA.starts_with(partial)
        } else {
            prefix(COPY) || prefix(DATA_FOR)
        }
    }

    /// Handles one whole line (without its newline).
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if self.in_copy {
            if line == END_OF_DATA {
                self.in_copy = false;
            }
            out.extend_from_slice(line);
            return;
        }
        if let Some(rest) = line.strip_prefix(DATA_FOR) {
            self.data_for = data_for_name(rest);
            out.extend_from_slice(line);
            return;
        }
        if line.starts_with(b"--") || line.is_empty() {
            out.extend_from_slice(line);
            return;
        }
        let data_for = self.data_for.take();
        if line.starts_with(COPY) && line.ends_with(FROM_STDIN) {
            self.in_copy = true;
            let head = &line[..line.len() - FROM_STDIN.len()];
            let target = &head[COPY.len()..];
            let target = match target.iter().position(|&b| b == b' ') {
                Some(i) => &target[..i],
                None => target,
            };
            if data_for.is_some_and(|d| d.as_bytes() == target) {
                out.extend_from_slice(head);
                out.extend_from_slice(b" FROM stdin WITH (FREEZE);");
                self.rewritten += 1;
                return;
            }
        }
        out.extend_from_slice(line);
    }
}

/// `T; Type: TABLE DATA; Schema: S; Owner: O` → `S.T` when both names are plain identifiers.
fn data_for_name(rest: &[u8]) -> Option<String> {
    let rest = std::str::from_utf8(rest).ok()?;
    let mut parts = rest.split("; ");
    let name = parts.next()?;
    if parts.next()? != "Type: TABLE DATA" {
        return None;
    }
    let schema = parts.next()?.strip_prefix("Schema: ")?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !s.as_bytes()[0].is_ascii_digit()
    };
    (plain(name) && plain(schema)).then(|| format!("{schema}.{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "SET x = 1;\n--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o\n--\n\nCOPY public.t (a, b) FROM stdin;\n1\tCOPY public.t (a) FROM stdin;\n\\.\n\n--\n-- Data for Name: leaf; Type: TABLE DATA; Schema: public; Owner: o\n--\n\nCOPY public.root (a) FROM stdin;\n2\n\\.\n\n-- Data for Name: Q; Type: TABLE DATA; Schema: public; Owner: o\nCOPY public.\"Q\" (a) FROM stdin;\n\\.\nCOPY public.t (a) FROM stdin;\n\\.\n-- Data for Name: e; Type: TABLE DATA; Schema: s1; Owner: o\nCOPY s1.e FROM stdin;\n\\.\nSELECT 1";

    fn run(chunks: &[&[u8]]) -> (String, usize) {
        let mut f = FreezeCopies::default();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        (String::from_utf8(out).unwrap(), f.rewritten)
    }

    #[test]
    fn copies_into_their_own_table_are_frozen() {
        let (out, n) = run(&[DUMP.as_bytes()]);
        assert_eq!(n, 2);
        let expected = DUMP
            .replacen(
                "COPY public.t (a, b) FROM stdin;",
                "COPY public.t (a, b) FROM stdin WITH (FREEZE);",
                1,
            )
            .replacen(
                "COPY s1.e FROM stdin;",
                "COPY s1.e FROM stdin WITH (FREEZE);",
                1,
            );
        assert_eq!(out, expected);
    }

    #[test]
    fn any_chunking_gives_the_same_output() {
        let (whole, _) = run(&[DUMP.as_bytes()]);
        let bytes = DUMP.as_bytes();
        for size in 1..12 {
            let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
            assert_eq!(run(&chunks).0, whole, "chunks of {size}");
        }
    }
}
