//! A bounds-only pass over a GGUF header, run before `rlx-gguf` parses it.
//!
//! `rlx-gguf` never pre-allocates an untrusted length, but it reads a string of a claimed length
//! until the file ends (a header claiming a 4 PB string made it read 250 MB before failing).
//! This pass walks the same layout over the memory-mapped bytes without allocating, and checks
//! every length and count from the header against the bytes that remain before anything is
//! read: key/value and tensor counts (each entry takes at least a fixed number of bytes), string
//! lengths, array lengths × their element size, tensor ranks, shape products (no overflow, and at
//! most 8 elements per byte of the file: no stored type uses less than a bit per element), and
//! tensor offsets (inside the file). It decides nothing else; `rlx-gguf` still parses.
//!
//! Layout (GGUF v1–v3): magic `GGUF`, version u32, tensor count and key/value count (u32 in v1,
//! u64 after), the key/values (string key, u32 type, value), the tensor infos (string name,
//! u32 rank, rank × dim (u32 in v1, u64 after), u32 type, u64 offset), padding, data.

/// The most dimensions a tensor may have here (GGML's own limit is 4).
pub const MAX_RANK: u64 = 8;

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    wide: bool,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "{what} at byte {}: needs {n} bytes, only {} remain in the file",
                self.pos,
                self.remaining()
            ));
        }
        let n = n as usize;
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A count or length: u32 in v1, u64 after.
    fn len(&mut self, what: &str) -> Result<u64, String> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    fn len_size(&self) -> u64 {
        if self.wide { 8 } else { 4 }
    }

    fn string(&mut self, what: &str) -> Result<&'a [u8], String> {
        let at = self.pos;
        let n = self.len(what)?;
        if n > self.remaining() {
            return Err(format!(
                "{what} at byte {at} claims a length of {n} bytes, but only {} remain in the file",
                self.remaining()
            ));
        }
        self.take(n, what)
    }

    /// Checks that `count` entries of at least `min` bytes each fit in what remains.
    fn fits(&self, count: u64, min: u64, what: &str) -> Result<(), String> {
        match count.checked_mul(min) {
            Some(n) if n <= self.remaining() => Ok(()),
            _ => Err(format!(
                "{what}: {count} entries of at least {min} bytes each cannot fit in the {} bytes \
                 that remain in the file (at byte {})",
                self.remaining(),
                self.pos
            )),
        }
    }
}

/// Bytes of a scalar metadata value of `ty` (strings: their minimal size, the length field).
fn scalar_size(ty: u32, len_size: u64) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => len_size,
        _ => return None,
    })
}

fn skip_value(c: &mut Cursor<'_>, ty: u32, key: &str) -> Result<(), String> {
    match ty {
        8 => {
            c.string(&format!("the string value of `{key}`"))?;
        }
        9 => {
            let inner = c.u32(&format!("the element type of array `{key}`"))?;
            let at = c.pos;
            let n = c.len(&format!("the length of array `{key}`"))?;
            let Some(size) = scalar_size(inner, c.len_size()) else {
                return Err(format!(
                    "array `{key}` at byte {at}: unknown element type {inner}"
                ));
            };
            c.fits(n, size, &format!("array `{key}`"))?;
            if inner == 8 {
                for i in 0..n {
                    c.string(&format!("string {i} of array `{key}`"))?;
                }
            } else {
                c.take(n * size, &format!("array `{key}`"))?;
            }
        }
        _ => {
            let Some(size) = scalar_size(ty, c.len_size()) else {
                return Err(format!("`{key}`: unknown metadata value type {ty}"));
            };
            c.take(size, &format!("the value of `{key}`"))?;
        }
    }
    Ok(())
}

/// Checks a GGUF header's lengths and counts against `bytes` (the whole file).
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        wide: true,
    };
    let magic = c.u32("the magic")?;
    if magic != 0x4655_4747 {
        return Err(format!("not a GGUF file (magic {magic:#x})"));
    }
    let version = c.u32("the version")?;
    if !(1..=3).contains(&version) {
        return Err(format!("unsupported GGUF version {version}"));
    }
    c.wide = version >= 2;
    let tensors = c.len("the tensor count")?;
    let kvs = c.len("the key/value count")?;
    let ls = c.len_size();
    // Smallest key/value: an empty key, a type, a one-byte value.
    c.fits(kvs, ls + 4 + 1, "the key/value count")?;
    for i in 0..kvs {
        let key = c.string(&format!("key {i}"))?;
        let key = String::from_utf8_lossy(key).into_owned();
        let ty = c.u32(&format!("the type of `{key}`"))?;
        skip_value(&mut c, ty, &key)?;
    }
    // Smallest tensor info: an empty name, rank 0, a type, an offset.
    c.fits(tensors, ls + 4 + 4 + 8, "the tensor count")?;
    let file_len = bytes.len() as u64;
    for i in 0..tensors {
        let name = c.string(&format!("the name of tensor {i}"))?;
        let name = String::from_utf8_lossy(name).into_owned();
        let rank = u64::from(c.u32(&format!("the rank of tensor `{name}`"))?);
        if rank > MAX_RANK {
            return Err(format!(
                "tensor `{name}` claims {rank} dimensions (at most {MAX_RANK})"
            ));
        }
        let mut elements: u64 = 1;
        for _ in 0..rank {
            let d = c.len(&format!("a dimension of tensor `{name}`"))?;
            elements = elements
                .checked_mul(d)
                .ok_or_else(|| format!("tensor `{name}`: the element count overflows 64 bits"))?;
        }
        if elements > file_len.saturating_mul(8) {
            return Err(format!(
                "tensor `{name}` claims {elements} elements, more than 8 per byte of the \
                 {file_len}-byte file"
            ));
        }
        c.u32(&format!("the type of tensor `{name}`"))?;
        let offset = c.u64(&format!("the offset of tensor `{name}`"))?;
        if offset > file_len {
            return Err(format!(
                "tensor `{name}` claims data at offset {offset}, past the end of the \
                 {file_len}-byte file"
            ));
        }
    }
    Ok(())
}
