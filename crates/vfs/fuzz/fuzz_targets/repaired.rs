//! Shared by the image fuzz targets: the image checksum would reject almost every
//! mutation before the parser runs, so each input is also tried as the payload behind a
//! valid header (right length and CRC).

use devshell_vm_vfs::image::{MAGIC, VERSION};

/// `payload` behind a valid image header.
pub(crate) fn with_valid_header(payload: &[u8]) -> Vec<u8> {
    let mut image = Vec::with_capacity(32 + payload.len());
    image.extend_from_slice(&MAGIC);
    image.extend_from_slice(&VERSION.to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes());
    image.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    image.extend_from_slice(&crc32(payload).to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes());
    image.extend_from_slice(payload);
    image
}

/// CRC-32 (IEEE), bitwise: the fuzz crate avoids extra dependencies.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
