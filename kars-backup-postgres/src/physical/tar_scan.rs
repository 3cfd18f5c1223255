//! A tar reader that watches a stream go by: it keeps the few members of a base backup that
//! describe it (`backup_label`, the end of `backup_manifest`, the start of `global/pg_control`)
//! while the stream itself flows on unchanged, in bounded memory.

/// How much of a kept member is kept: all of `backup_label` up to this size, the last this
/// many bytes of `backup_manifest` (its WAL ranges are at its end).
const KEEP: usize = 64 * 1024;

/// What the scanner does with the member it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Head,
    Tail,
}

/// Which member is which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Label,
    Manifest,
    Control,
}

/// What a [`TarWalker`] reports, member by member.
pub(crate) trait TarVisitor {
    /// A member starts: its name (without a leading `./`), its type flag and data size.
    fn member(&mut self, name: &str, typeflag: u8, size: u64);
    /// The next piece of the current member's data.
    fn data(&mut self, data: &[u8]);
    /// The current member's data has ended.
    fn end(&mut self);
}

/// Walks a tar stream fed to it in pieces of any size: headers, member data, padding. GNU long
/// names (`L` members) are applied to the member they name.
#[derive(Debug, Default)]
pub(crate) struct TarWalker {
    header: Vec<u8>,
    /// Bytes of member data left in the current member.
    data_left: u64,
    /// Padding bytes left after the current member's data.
    pad_left: u64,
    /// Collecting a GNU long name.
    in_long_name: bool,
    long_name: Option<Vec<u8>>,
}

impl TarWalker {
    /// Feeds the next piece of the stream, reporting to `visitor`.
    pub(crate) fn feed<V: TarVisitor + ?Sized>(&mut self, visitor: &mut V, mut data: &[u8]) {
        while !data.is_empty() {
            if self.data_left > 0 {
                let n = (self.data_left.min(data.len() as u64)) as usize;
                if self.in_long_name {
                    self.long_name
                        .get_or_insert_with(Vec::new)
                        .extend_from_slice(&data[..n]);
                } else {
                    visitor.data(&data[..n]);
                }
                self.data_left -= n as u64;
                data = &data[n..];
                if self.data_left == 0 {
                    self.end_member(visitor);
                }
            } else if self.pad_left > 0 {
                let n = (self.pad_left.min(data.len() as u64)) as usize;
                self.pad_left -= n as u64;
                data = &data[n..];
            } else {
                let n = (512 - self.header.len()).min(data.len());
                self.header.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.header.len() == 512 {
                    let header = std::mem::take(&mut self.header);
                    self.start_member(visitor, &header);
                }
            }
        }
    }

    fn start_member<V: TarVisitor + ?Sized>(&mut self, visitor: &mut V, h: &[u8]) {
        if h.iter().all(|&b| b == 0) {
            return;
        }
        let size = parse_size(&h[124..136]);
        self.data_left = size;
        self.pad_left = (512 - size % 512) % 512;
        if h[156] == b'L' {
            self.in_long_name = true;
            self.long_name = Some(Vec::new());
        } else {
            let name = match self.long_name.take() {
                Some(long) => {
                    let end = long.iter().position(|&c| c == 0).unwrap_or(long.len());
                    String::from_utf8_lossy(&long[..end]).into_owned()
                }
                None => member_name(h),
            };
            visitor.member(name.trim_start_matches("./"), h[156], size);
        }
        if size == 0 {
            self.end_member(visitor);
        }
    }

    fn end_member<V: TarVisitor + ?Sized>(&mut self, visitor: &mut V) {
        if std::mem::take(&mut self.in_long_name) {
            return;
        }
        visitor.end();
    }
}

/// Whether a member of this type flag is a regular file.
pub(crate) fn is_regular(typeflag: u8) -> bool {
    matches!(typeflag, b'0' | 0)
}

/// Scans a tar stream fed to it in pieces.
#[derive(Debug, Default)]
pub(crate) struct TarScan {
    walker: TarWalker,
    found: Found,
}

/// What [`TarScan`] keeps.
#[derive(Debug, Default)]
pub(crate) struct Found {
    current: Option<(Member, Keep)>,
    buf: Vec<u8>,
    /// `backup_label`, whole.
    pub(crate) label: Option<Vec<u8>>,
    /// The end of `backup_manifest`.
    pub(crate) manifest_tail: Option<Vec<u8>>,
    /// The first bytes of `global/pg_control`.
    pub(crate) control_head: Option<Vec<u8>>,
    /// Members seen.
    pub(crate) members: u64,
}

impl TarScan {
    /// Feeds the next piece of the stream.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.walker.feed(&mut self.found, data);
    }

    /// What was found so far.
    pub(crate) fn found(&self) -> &Found {
        &self.found
    }
}

impl TarVisitor for Found {
    fn member(&mut self, name: &str, typeflag: u8, _size: u64) {
        self.members += 1;
        self.current = match (is_regular(typeflag), name) {
            (true, "backup_label") => Some((Member::Label, Keep::Head)),
            (true, "backup_manifest") => Some((Member::Manifest, Keep::Tail)),
            (true, "global/pg_control") => Some((Member::Control, Keep::Head)),
            _ => None,
        };
        self.buf.clear();
    }

    fn data(&mut self, data: &[u8]) {
        match self.current {
            Some((_, Keep::Head)) => {
                let room = KEEP.saturating_sub(self.buf.len());
                self.buf.extend_from_slice(&data[..room.min(data.len())]);
            }
            Some((_, Keep::Tail)) => {
                self.buf.extend_from_slice(data);
                if self.buf.len() > 2 * KEEP {
                    let cut = self.buf.len() - KEEP;
                    self.buf.drain(..cut);
                }
            }
            None => {}
        }
    }

    fn end(&mut self) {
        if let Some((member, _)) = self.current.take() {
            let mut kept = std::mem::take(&mut self.buf);
            if member == Member::Manifest && kept.len() > KEEP {
                kept.drain(..kept.len() - KEEP);
            }
            match member {
                Member::Label => self.label = Some(kept),
                Member::Manifest => self.manifest_tail = Some(kept),
                Member::Control => self.control_head = Some(kept),
            }
        }
    }
}

/// A header's member name: the ustar prefix and the name.
fn member_name(h: &[u8]) -> String {
    let field = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let name = field(&h[0..100]);
    let prefix = if &h[257..262] == b"ustar" {
        field(&h[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// A header's size field: octal text, or base-256 for large members.
fn parse_size(b: &[u8]) -> u64 {
    if b[0] & 0x80 != 0 {
        return b[1..]
            .iter()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    }
    let text: String = b
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as char)
        .collect();
    u64::from_str_radix(text.trim(), 8).unwrap_or(0)
}

/// A tar of regular files, for tests.
#[cfg(test)]
pub(crate) fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_describing_members_in_any_piece_sizes() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut manifest = vec![b'x'; 150_000];
        manifest.extend_from_slice(b"\"WAL-Ranges\": [ end ]");
        let tar = tar_of(&[
            ("backup_label", b"START WAL LOCATION: 0/2000028\n"),
            ("base/1/1259", &big),
            ("global/pg_control", &[7u8; 8192]),
            ("empty", b""),
            ("backup_manifest", &manifest),
        ]);
        for piece in [1usize, 7, 512, 4096, 1 << 20] {
            let mut scan = TarScan::default();
            for c in tar.chunks(piece) {
                scan.feed(c);
            }
            let s = scan.found();
            assert_eq!(s.members, 5);
            assert_eq!(
                s.label.as_deref(),
                Some(&b"START WAL LOCATION: 0/2000028\n"[..])
            );
            let tail = s.manifest_tail.as_ref().unwrap();
            assert_eq!(tail.len(), KEEP);
            assert!(tail.ends_with(b"\"WAL-Ranges\": [ end ]"));
            assert_eq!(&s.control_head.as_ref().unwrap()[..8], &[7u8; 8]);
        }
    }
}
