//! One picture out of a NumPy `.npy` array of pictures (uint8, N×H×W×3, C order), the
//! form EMOTIC's widely used preprocessing (`mat2py.py`) stores whole pictures in.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::image::RgbImage;

use super::DatasetError;

/// Picture `index` of the array in `path`, read without loading the rest.
pub fn read_npy_picture(path: &Path, index: usize) -> Result<RgbImage, DatasetError> {
    let err = |reason: String| DatasetError { path: path.display().to_string(), row: "-".into(), reason };
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot open ({e})")))?;
    let mut head = [0u8; 10];
    f.read_exact(&mut head).map_err(|e| err(format!("cannot read the header ({e})")))?;
    if &head[..6] != b"\x93NUMPY" {
        return Err(err("not a .npy file".into()));
    }
    let (header_len, prefix) = match head[6] {
        1 => (usize::from(u16::from_le_bytes([head[8], head[9]])), 10),
        _ => {
            let mut more = [0u8; 2];
            f.read_exact(&mut more).map_err(|e| err(format!("cannot read the header ({e})")))?;
            (u32::from_le_bytes([head[8], head[9], more[0], more[1]]) as usize, 12)
        }
    };
    let mut header = vec![0u8; header_len];
    f.read_exact(&mut header).map_err(|e| err(format!("cannot read the header ({e})")))?;
    let header = String::from_utf8_lossy(&header);
    if !header.contains("'descr': '|u1'") || header.contains("'fortran_order': True") {
        return Err(err(format!("expected a uint8 array in C order, found {}", header.trim())));
    }
    let shape: Vec<usize> = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(['(', ')']).nth(1))
        .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
        .unwrap_or_default();
    let [n, h, w, 3] = shape[..] else {
        return Err(err(format!("expected pictures shaped N×H×W×3, found {shape:?}")));
    };
    if index >= n {
        return Err(err(format!("has {n} pictures, asked for number {}", index + 1)));
    }
    let size = h * w * 3;
    let mut data = vec![0u8; size];
    f.seek(SeekFrom::Start((prefix + header_len + index * size) as u64))
        .and_then(|_| f.read_exact(&mut data))
        .map_err(|e| err(format!("picture {} is cut short ({e})", index + 1)))?;
    Ok(RgbImage { data, width: w, height: h })
}
