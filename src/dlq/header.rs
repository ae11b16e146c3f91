//! The segment header and the seal trailer: their constants, the check of
//! a header read back, the layout of a v2 segment, and the trailer's
//! encoding. Used by the segment writer and reader (`segment`) and by the
//! scanner (`scan`), which both depend on it and not on each other's header
//! code.
//!
//! Header layout (64 bytes, see `segment` for the full table): magic
//! `LCDLQSEG`, version and header length (u32 LE each), then the segment's
//! size, sequence and creation time; zero padding from byte 40. Version 1
//! segments hold v1 record frames; version 2 segments hold v2 blocks, an
//! open block and a seal trailer (see `segment`).
//!
//! Trailer layout (the last 64 bytes of a v2 segment, zero until sealed):
//!
//! ```text
//! magic "LCDLQEND" | crc32c u32 (of bytes 12..64) | version u32 (=1)
//! | sequence u64 | records u64 | used_bytes u64 | input_bytes u64
//! | fingerprint u32 | zero padding to 64 bytes
//! ```

pub const SEGMENT_MAGIC: &[u8; 8] = b"LCDLQSEG";
/// The version this build writes.
pub const SEGMENT_VERSION: u32 = 2;
/// The version of segments of v1 record frames, still read.
pub const SEGMENT_VERSION_V1: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 64;
pub const TRAILER_MAGIC: &[u8; 8] = b"LCDLQEND";
pub const TRAILER_VERSION: u32 = 1;
pub const TRAILER_BYTES: usize = 64;
/// Largest open block area (see [`staging_bytes`]).
pub const STAGING_BYTES_MAX: usize = 128 * 1024;

/// Bytes of the open block area of a v2 segment of `segment_bytes`: an
/// eighth of the segment, at most [`STAGING_BYTES_MAX`]. A function of the
/// size alone, so that a reader finds the area even when the header is
/// damaged; part of the format, so it never changes for version 2.
pub fn staging_bytes(segment_bytes: u64) -> usize {
    let eighth = segment_bytes / 8 / 16 * 16;
    usize::try_from(eighth.min(STAGING_BYTES_MAX as u64)).expect("at most 128 KiB")
}

/// Where the areas of a v2 segment of `segment_bytes` lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Blocks go from the end of the header up to here.
    pub staging_start: usize,
    /// The open block area ends here; the trailer follows.
    pub trailer_start: usize,
}

impl Layout {
    pub fn of(segment_bytes: u64) -> Option<Layout> {
        let segment_bytes = usize::try_from(segment_bytes).ok()?;
        let trailer_start = segment_bytes.checked_sub(TRAILER_BYTES)?;
        let staging_start = trailer_start.checked_sub(staging_bytes(segment_bytes as u64))?;
        (staging_start > SEGMENT_HEADER_BYTES).then_some(Layout {
            staging_start,
            trailer_start,
        })
    }
}

/// What a sealed v2 segment says of itself in its trailer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trailer {
    pub sequence: u64,
    pub records: u64,
    /// Bytes of the file in use: the header and the blocks.
    pub used_bytes: u64,
    /// Bytes of the messages of its records.
    pub input_bytes: u64,
    /// The records' fingerprint (see `ack::Fingerprint`).
    pub fingerprint: u32,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_BYTES] {
        let mut bytes = [0u8; TRAILER_BYTES];
        bytes[0..8].copy_from_slice(TRAILER_MAGIC);
        bytes[12..16].copy_from_slice(&TRAILER_VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.records.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.used_bytes.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.input_bytes.to_le_bytes());
        bytes[48..52].copy_from_slice(&self.fingerprint.to_le_bytes());
        let checksum = crc32c::crc32c(&bytes[12..]);
        bytes[8..12].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// The trailer in `bytes`, if it is one this build wrote, for segment
    /// `sequence`, and consistent with a segment of `segment_bytes`.
    pub fn decode(bytes: &[u8], sequence: u64, segment_bytes: u64) -> Option<Trailer> {
        let bytes = <&[u8; TRAILER_BYTES]>::try_from(bytes).ok()?;
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let intact = &bytes[0..8] == TRAILER_MAGIC
            && u32_at(8) == crc32c::crc32c(&bytes[12..])
            && u32_at(12) == TRAILER_VERSION
            && bytes[52..].iter().all(|&byte| byte == 0);
        let trailer = Trailer {
            sequence: u64_at(16),
            records: u64_at(24),
            used_bytes: u64_at(32),
            input_bytes: u64_at(40),
            fingerprint: u32_at(48),
        };
        let layout = Layout::of(segment_bytes)?;
        let consistent = trailer.sequence == sequence
            && trailer.used_bytes >= SEGMENT_HEADER_BYTES as u64
            && trailer.used_bytes <= layout.staging_start as u64
            && trailer.records <= trailer.used_bytes;
        (intact && consistent).then_some(trailer)
    }
}

/// Why a segment header is not the one the writer wrote. The segment is
/// scanned anyway; the damage is counted as one corrupt region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderDamage {
    #[error("the file is {0} bytes, shorter than the {SEGMENT_HEADER_BYTES}-byte header")]
    Short(u64),
    #[error("the header does not start with the segment magic")]
    Magic,
    #[error("the header says version {0}, this build reads versions 1 and 2")]
    Version(u32),
    #[error("the header says it is {0} bytes, not {SEGMENT_HEADER_BYTES}")]
    HeaderBytes(u32),
    #[error("the header says sequence {found}, the file name {named}")]
    Sequence { found: u64, named: u64 },
    #[error("the header's padding is not zero")]
    Padding,
}

/// Checks a segment header read from a file named for sequence `named`;
/// returns its version.
pub fn check_header(header: &[u8], named: Option<u64>) -> Result<u32, HeaderDamage> {
    let Ok(header) = <&[u8; SEGMENT_HEADER_BYTES]>::try_from(header) else {
        return Err(HeaderDamage::Short(header.len() as u64));
    };
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if &header[0..8] != SEGMENT_MAGIC {
        return Err(HeaderDamage::Magic);
    }
    let version = u32_at(8);
    if version != SEGMENT_VERSION && version != SEGMENT_VERSION_V1 {
        return Err(HeaderDamage::Version(version));
    }
    if u32_at(12) != SEGMENT_HEADER_BYTES as u32 {
        return Err(HeaderDamage::HeaderBytes(u32_at(12)));
    }
    let found = u64::from_le_bytes(header[24..32].try_into().expect("8 bytes"));
    if let Some(named) = named
        && named != found
    {
        return Err(HeaderDamage::Sequence { found, named });
    }
    if header[40..].iter().any(|&byte| byte != 0) {
        return Err(HeaderDamage::Padding);
    }
    Ok(version)
}
