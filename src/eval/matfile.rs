//! Just enough of MATLAB's Level 5 MAT-file format to read EMOTIC's `Annotations.mat`.
//!
//! A MAT file is a 128-byte header and a sequence of tagged data elements; each variable
//! is an `miMATRIX` element, usually zlib-compressed (`miCOMPRESSED`). EMOTIC's
//! annotations are struct arrays of strings, numbers, cells and nested structs, so this
//! reads those classes (numeric, char, cell, struct) and refuses the rest by name. MATLAB's
//! v7.3 files are HDF5, a different format: they are refused with that advice.

use std::io::Read;

/// One MATLAB value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any numeric class, converted to `f64`, column-major.
    Num(Vec<f64>),
    /// A char array (1×N, as EMOTIC's are), as one string.
    Char(String),
    /// A cell array, column-major.
    Cell(Vec<Value>),
    /// A struct array: the field names, and per element one value per field.
    Struct { fields: Vec<String>, elements: Vec<Vec<Value>> },
}

impl Value {
    /// Field `name` of struct element `i`.
    pub fn field(&self, i: usize, name: &str) -> Option<&Value> {
        match self {
            Value::Struct { fields, elements } => {
                let f = fields.iter().position(|n| n == name)?;
                elements.get(i)?.get(f)
            }
            _ => None,
        }
    }

    /// Elements of a struct array (or of a cell).
    pub fn len(&self) -> usize {
        match self {
            Value::Struct { elements, .. } => elements.len(),
            Value::Cell(v) => v.len(),
            Value::Num(v) => v.len(),
            Value::Char(_) => 1,
        }
    }

    /// Every string in a char array or (nested) cell of them.
    pub fn strings(&self) -> Vec<String> {
        match self {
            Value::Char(s) => vec![s.clone()],
            Value::Cell(v) => v.iter().flat_map(Value::strings).collect(),
            _ => Vec::new(),
        }
    }
}

/// Why a MAT file could not be read.
pub type MatError = String;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;

/// The top-level variables of a MAT file, by name.
pub fn read(bytes: &[u8]) -> Result<Vec<(String, Value)>, MatError> {
    if bytes.len() < 128 {
        return Err("too short for a MAT file".into());
    }
    if bytes.starts_with(b"\x89HDF") || bytes[512.min(bytes.len() - 4)..].starts_with(b"\x89HDF") {
        return Err("a MATLAB v7.3 (HDF5) file: save it with -v7 (or use EMOTIC's original file)".into());
    }
    if &bytes[126..128] != b"IM" {
        return Err("not a little-endian Level 5 MAT file (bytes 126-127 are not 'IM')".into());
    }
    let mut out = Vec::new();
    let mut r = Reader { b: &bytes[128..], at: 0 };
    while r.at + 8 <= r.b.len() {
        let (ty, data) = r.element()?;
        match ty {
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(data)
                    .read_to_end(&mut inflated)
                    .map_err(|e| format!("a compressed variable does not inflate ({e})"))?;
                let mut inner = Reader { b: &inflated, at: 0 };
                let (ty, data) = inner.element()?;
                if ty == MI_MATRIX {
                    out.push(matrix(data)?);
                }
            }
            MI_MATRIX => out.push(matrix(data)?),
            _ => {}
        }
    }
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u32_at(&self, at: usize) -> Result<u32, MatError> {
        let s = self.b.get(at..at + 4).ok_or("truncated data element")?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// The next data element's type and bytes (small elements included), past its padding.
    fn element(&mut self) -> Result<(u32, &'a [u8]), MatError> {
        let first = self.u32_at(self.at)?;
        if first >> 16 != 0 {
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            let data = self.b.get(self.at + 4..self.at + 4 + n).ok_or("truncated small data element")?;
            self.at += 8;
            return Ok((ty, data));
        }
        let n = self.u32_at(self.at + 4)? as usize;
        let start = self.at + 8;
        let data = self.b.get(start..start + n).ok_or("truncated data element")?;
        self.at = if first == MI_COMPRESSED { start + n } else { start + n.div_ceil(8) * 8 };
        Ok((first, data))
    }
}

fn numbers(ty: u32, d: &[u8]) -> Result<Vec<f64>, MatError> {
    fn chunks<const N: usize>(d: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        d.chunks_exact(N).map(|c| f(c.try_into().unwrap_or([0; N]))).collect()
    }
    Ok(match ty {
        MI_INT8 => d.iter().map(|&v| f64::from(v as i8)).collect(),
        MI_UINT8 | MI_UTF8 => d.iter().map(|&v| f64::from(v)).collect(),
        MI_INT16 => chunks::<2>(d, |c| f64::from(i16::from_le_bytes(c))),
        MI_UINT16 | MI_UTF16 => chunks::<2>(d, |c| f64::from(u16::from_le_bytes(c))),
        MI_INT32 => chunks::<4>(d, |c| f64::from(i32::from_le_bytes(c))),
        MI_UINT32 => chunks::<4>(d, |c| f64::from(u32::from_le_bytes(c))),
        MI_SINGLE => chunks::<4>(d, |c| f64::from(f32::from_le_bytes(c))),
        MI_DOUBLE => chunks::<8>(d, f64::from_le_bytes),
        MI_INT64 => chunks::<8>(d, |c| i64::from_le_bytes(c) as f64),
        MI_UINT64 => chunks::<8>(d, |c| u64::from_le_bytes(c) as f64),
        other => return Err(format!("unexpected data type {other} in a numeric array")),
    })
}

/// One `miMATRIX` element's name and value.
fn matrix(data: &[u8]) -> Result<(String, Value), MatError> {
    if data.is_empty() {
        return Ok((String::new(), Value::Num(Vec::new())));
    }
    let mut r = Reader { b: data, at: 0 };
    let (_, flags) = r.element()?;
    let class = flags.first().copied().ok_or("array flags are empty")?;
    let (_, dims) = r.element()?;
    let count = numbers(MI_INT32, dims)?.iter().fold(1usize, |n, &d| n.saturating_mul(d.max(0.0) as usize));
    let (_, name) = r.element()?;
    let name = String::from_utf8_lossy(name).into_owned();
    let value = match class {
        // mxCELL
        1 => Value::Cell(
            (0..count).map(|_| r.element().and_then(|(_, d)| matrix(d)).map(|v| v.1)).collect::<Result<_, _>>()?,
        ),
        // mxSTRUCT
        2 => {
            let (_, len) = r.element()?;
            let len = numbers(MI_INT32, len)?.first().copied().unwrap_or(0.0) as usize;
            let (_, names) = r.element()?;
            let fields: Vec<String> = if len == 0 {
                Vec::new()
            } else {
                names.chunks(len).map(|c| String::from_utf8_lossy(c).trim_end_matches('\0').to_string()).collect()
            };
            let mut elements = Vec::new();
            for _ in 0..count {
                let row = (0..fields.len())
                    .map(|_| r.element().and_then(|(_, d)| matrix(d)).map(|v| v.1))
                    .collect::<Result<Vec<_>, _>>()?;
                elements.push(row);
            }
            Value::Struct { fields, elements }
        }
        // mxCHAR
        4 => {
            let (ty, d) = r.element()?;
            let text = if ty == MI_UTF8 || ty == MI_UINT8 || ty == MI_INT8 {
                String::from_utf8_lossy(d).into_owned()
            } else {
                let units: Vec<u16> = numbers(MI_UINT16, d)?.iter().map(|&v| v as u16).collect();
                String::from_utf16_lossy(&units)
            };
            Value::Char(text)
        }
        6..=15 => {
            let (ty, d) = r.element()?;
            Value::Num(numbers(ty, d)?)
        }
        other => return Err(format!("variable '{name}': MATLAB class {other} (objects, sparse) is not read")),
    };
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = vec![b' '; 128];
        h[124..126].copy_from_slice(&0x0100u16.to_le_bytes());
        h[126..128].copy_from_slice(b"IM");
        h
    }

    fn element(ty: u32, data: &[u8]) -> Vec<u8> {
        let mut out = ty.to_le_bytes().to_vec();
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out.resize(out.len().div_ceil(8) * 8, 0);
        out
    }

    #[test]
    fn a_struct_with_text_and_numbers_reads_back() {
        // s = struct('name', 'Anger', 'box', [1 2 3 4]), uncompressed.
        let mut body = element(MI_UINT32, &[2, 0, 0, 0, 0, 0, 0, 0]);
        body.extend(element(MI_INT32, &[1, 0, 0, 0, 1, 0, 0, 0]));
        body.extend(element(MI_INT8, b"s"));
        body.extend(element(MI_INT32, &[8, 0, 0, 0]));
        body.extend(element(MI_INT8, b"name\0\0\0\0box\0\0\0\0\0"));
        let mut name = element(MI_UINT32, &[4, 0, 0, 0, 0, 0, 0, 0]);
        name.extend(element(MI_INT32, &[1, 0, 0, 0, 5, 0, 0, 0]));
        name.extend(element(MI_INT8, b""));
        name.extend(element(MI_UTF8, b"Anger"));
        body.extend(element(MI_MATRIX, &name));
        let mut bbox = element(MI_UINT32, &[6, 0, 0, 0, 0, 0, 0, 0]);
        bbox.extend(element(MI_INT32, &[1, 0, 0, 0, 4, 0, 0, 0]));
        bbox.extend(element(MI_INT8, b""));
        bbox.extend(element(MI_UINT8, &[1, 2, 3, 4]));
        body.extend(element(MI_MATRIX, &bbox));
        let mut file = header();
        file.extend(element(MI_MATRIX, &body));
        let vars = read(&file).unwrap();
        assert_eq!(vars[0].0, "s");
        assert_eq!(vars[0].1.field(0, "name"), Some(&Value::Char("Anger".into())));
        assert_eq!(vars[0].1.field(0, "box"), Some(&Value::Num(vec![1.0, 2.0, 3.0, 4.0])));
    }

    #[test]
    fn broken_files_are_errors_not_panics() {
        assert!(read(&[0u8; 10]).is_err());
        let mut wrong_endian = header();
        wrong_endian[126..128].copy_from_slice(b"MI");
        assert!(read(&wrong_endian).unwrap_err().contains("little-endian"));
        let mut truncated = header();
        truncated.extend(14u32.to_le_bytes());
        truncated.extend(4000u32.to_le_bytes());
        truncated.extend([0u8; 16]);
        assert!(read(&truncated).is_err());
        // Dimensions that claim billions of elements, with nothing behind them.
        let mut body = element(MI_UINT32, &[1, 0, 0, 0, 0, 0, 0, 0]);
        body.extend(element(MI_INT32, &[0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f]));
        body.extend(element(MI_INT8, b"c"));
        let mut huge = header();
        huge.extend(element(MI_MATRIX, &body));
        assert!(read(&huge).is_err());
        let mut compressed = header();
        compressed.extend(element(MI_COMPRESSED, b"not zlib"));
        assert!(read(&compressed).unwrap_err().contains("inflate"));
    }
}
