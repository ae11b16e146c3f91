//! The segment header: its constants and the check of a header read back.
//! Used by the segment writer and reader (`segment`) and by the scanner
//! (`scan`), which both depend on it and not on each other's header code.
//!
//! Layout (64 bytes, see `segment` for the full table): magic `LCDLQSEG`,
//! version and header length (u32 LE each), then the segment's size,
//! sequence and creation time; zero padding from byte 40.

pub const SEGMENT_MAGIC: &[u8; 8] = b"LCDLQSEG";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 64;

/// Why a segment header is not the one the writer wrote. The segment is
/// scanned anyway; the damage is counted as one corrupt region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderDamage {
    #[error("the file is {0} bytes, shorter than the {SEGMENT_HEADER_BYTES}-byte header")]
    Short(u64),
    #[error("the header does not start with the segment magic")]
    Magic,
    #[error("the header says version {0}, this build reads version {SEGMENT_VERSION}")]
    Version(u32),
    #[error("the header says it is {0} bytes, not {SEGMENT_HEADER_BYTES}")]
    HeaderBytes(u32),
    #[error("the header says sequence {found}, the file name {named}")]
    Sequence { found: u64, named: u64 },
    #[error("the header's padding is not zero")]
    Padding,
}

/// Checks a segment header read from a file named for sequence `named`.
pub fn check_header(header: &[u8], named: Option<u64>) -> Result<(), HeaderDamage> {
    let Ok(header) = <&[u8; SEGMENT_HEADER_BYTES]>::try_from(header) else {
        return Err(HeaderDamage::Short(header.len() as u64));
    };
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if &header[0..8] != SEGMENT_MAGIC {
        return Err(HeaderDamage::Magic);
    }
    if u32_at(8) != SEGMENT_VERSION {
        return Err(HeaderDamage::Version(u32_at(8)));
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
    Ok(())
}
