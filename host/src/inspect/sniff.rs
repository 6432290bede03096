//! Recognising containers by their magic bytes: the only evidence that cannot lie about
//! what a reader will do with the bytes (a name or a media type can).

/// Bytes looked at: tar's `ustar` magic sits at offset 257 of a 512-byte header.
pub const SNIFF_LEN: usize = 512;

/// A container or stream format the walk knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
    /// bzip2 (`BZh1`..`BZh9`, then the block magic `31 41 59 26 53 59` or the
    /// end-of-stream magic).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zip (`PK\3\4`, or `PK\5\6` for an empty archive). Office, ODF, EPUB, JAR and APK
    /// files are zips.
    Zip,
    /// tar (ustar or GNU magic, or an old v7 header whose checksum adds up).
    Tar,
    /// 7z (`7z\xbc\xaf\x27\x1c`).
    SevenZ,
    /// RAR 4 or 5 (`Rar!\x1a\x07`): recognised, not opened.
    Rar,
}

impl Format {
    /// A name for problems and logs.
    pub fn name(self) -> &'static str {
        match self {
            Format::Gzip => "gzip",
            Format::Zstd => "zstd",
            Format::Bzip2 => "bzip2",
            Format::Xz => "xz",
            Format::Zip => "zip",
            Format::Tar => "tar",
            Format::SevenZ => "7z",
            Format::Rar => "rar",
        }
    }
}

/// The format the first bytes of an object announce (up to [`SNIFF_LEN`] of them; fewer
/// only if the object is shorter).
pub fn sniff(prefix: &[u8]) -> Option<Format> {
    let starts = |magic: &[u8]| prefix.starts_with(magic);
    if starts(&[0x1f, 0x8b]) {
        return Some(Format::Gzip);
    }
    if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some(Format::Zstd);
    }
    if prefix.len() >= 10
        && starts(b"BZh")
        && (b'1'..=b'9').contains(&prefix[3])
        && (prefix[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
            || prefix[4..10] == [0x17, 0x72, 0x45, 0x38, 0x50, 0x90])
    {
        return Some(Format::Bzip2);
    }
    if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Some(Format::Xz);
    }
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") || starts(b"PK\x07\x08PK\x03\x04") {
        return Some(Format::Zip);
    }
    if starts(&[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c]) {
        return Some(Format::SevenZ);
    }
    if starts(b"Rar!\x1a\x07") {
        return Some(Format::Rar);
    }
    if is_tar_header(prefix) {
        return Some(Format::Tar);
    }
    None
}

/// Whether `block` starts with a tar header: the ustar/GNU magic, or (v7 tar has none)
/// a checksum field that matches the header's bytes. A block of zeros is not a header.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    let block = &block[..512];
    if &block[257..262] == b"ustar" {
        return true;
    }
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| (b'0'..=b'7').contains(&b))
        .collect();
    if text.is_empty() {
        return false;
    }
    let Ok(stored) = u32::from_str_radix(std::str::from_utf8(&text).unwrap_or("x"), 8) else {
        return false;
    };
    let sum = header_checksum(block);
    // A v7 name field must also start with a printable byte: a random blob whose
    // checksum happens to match is then rarer still.
    sum == stored && block[0].is_ascii_graphic()
}

/// A tar header's checksum: its bytes summed, with its own checksum field read as spaces.
fn header_checksum(block: &[u8]) -> u32 {
    block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_name_the_format() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Some(Format::Gzip));
        assert_eq!(sniff(b"PK\x03\x04rest"), Some(Format::Zip));
        assert_eq!(sniff(b"PK\x05\x06"), Some(Format::Zip));
        assert_eq!(
            sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]),
            Some(Format::Xz)
        );
        assert_eq!(sniff(b"BZh91AY&SY...."), Some(Format::Bzip2));
        assert_eq!(sniff(b"BZh9 not a block"), None);
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(sniff(&[0u8; 512]), None);
        let mut tar = [0u8; 512];
        tar[..5].copy_from_slice(b"a.txt");
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(sniff(&tar), Some(Format::Tar));
    }

    #[test]
    fn a_v7_tar_header_is_known_by_its_checksum() {
        let mut block = [0u8; 512];
        block[..5].copy_from_slice(b"a.txt");
        block[124..135].copy_from_slice(b"00000000005");
        let sum = header_checksum(&block);
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        assert_eq!(sniff(&block), Some(Format::Tar));
        block[0] = b'b';
        assert_eq!(sniff(&block), None, "the checksum no longer adds up");
    }
}
