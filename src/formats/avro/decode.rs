//! Running a resolution plan over a datum's bytes, writing attrib's JSON form as it goes.

use super::resolve::{Num, Plan, Step, Text};
use crate::model::time::format_rfc3339;

struct In<'a> {
    b: &'a [u8],
    pos: usize,
    work: usize,
    max_work: usize,
}

const TRUNCATED: &str = "the record ends early";

impl In<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.b.get(self.pos).ok_or(TRUNCATED)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n > self.b.len() - self.pos {
            return Err(TRUNCATED.into());
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn long(&mut self) -> Result<i64, String> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            let chunk = (b & 0x7f) as u64;
            if shift == 63 && chunk > 1 {
                return Err("a long is out of range".into());
            }
            v |= chunk << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err("a long is out of range".into());
            }
        }
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn int(&mut self) -> Result<i32, String> {
        i32::try_from(self.long()?).map_err(|_| "an int is out of range".to_string())
    }

    fn len(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| format!("negative length {n}"))
    }

    fn tick(&mut self) -> Result<(), String> {
        self.work += 1;
        if self.work > self.max_work {
            return Err("the record holds more values than its size allows".into());
        }
        Ok(())
    }
}

/// The decimal string of a two's-complement big-endian unscaled value.
pub(super) fn decimal_text(bytes: &[u8], scale: u32) -> Result<String, String> {
    if bytes.is_empty() {
        return Err("a decimal has no bytes".into());
    }
    let mut b = bytes;
    while b.len() > 1 && ((b[0] == 0 && b[1] & 0x80 == 0) || (b[0] == 0xff && b[1] & 0x80 != 0)) {
        b = &b[1..];
    }
    if b.len() > 16 {
        return Err("a decimal is out of range".into());
    }
    let mut v: i128 = if b[0] & 0x80 != 0 { -1 } else { 0 };
    for &x in b {
        v = (v << 8) | x as i128;
    }
    rust_decimal::Decimal::try_from_i128_with_scale(v, scale)
        .map(|d| d.to_string())
        .map_err(|_| "a decimal is out of range".to_string())
}

fn write_text(t: Text, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    match t {
        Text::Utf8 => {
            let s = std::str::from_utf8(bytes).map_err(|_| "a string is not UTF-8".to_string())?;
            serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string())
        }
        Text::Decimal(scale) => {
            let s = decimal_text(bytes, scale)?;
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
            Ok(())
        }
        Text::Raw => {
            let s: String = bytes.iter().map(|&b| b as char).collect();
            serde_json::to_writer(&mut *out, &s).map_err(|e| e.to_string())
        }
    }
}

fn write_num(n: Num, v: i64, out: &mut Vec<u8>) {
    match n {
        Num::Number => {
            std::io::Write::write_fmt(out, format_args!("{v}"))
                .expect("writing to a Vec cannot fail");
        }
        Num::Millis(div) => {
            out.push(b'"');
            out.extend_from_slice(format_rfc3339(v.div_euclid(div)).as_bytes());
            out.push(b'"');
        }
    }
}

fn write_float(v: f64, out: &mut Vec<u8>) -> Result<(), String> {
    if !v.is_finite() {
        return Err("a float is not finite".into());
    }
    std::io::Write::write_fmt(out, format_args!("{v}")).expect("writing to a Vec cannot fail");
    Ok(())
}

fn run(p: &Plan, r: &mut In, out: &mut Vec<u8>, emit: bool, limit: usize) -> Result<(), String> {
    r.tick()?;
    match p {
        Plan::Null => {
            if emit {
                out.extend_from_slice(b"null");
            }
        }
        Plan::Bool => {
            let b = match r.byte()? {
                0 => false,
                1 => true,
                x => return Err(format!("a boolean is {x}, not 0 or 1")),
            };
            if emit {
                out.extend_from_slice(if b { b"true" } else { b"false" });
            }
        }
        Plan::Int(n) => {
            let v = r.int()?;
            if emit {
                write_num(*n, v as i64, out);
            }
        }
        Plan::Long(n) => {
            let v = r.long()?;
            if emit {
                write_num(*n, v, out);
            }
        }
        Plan::Float => {
            let b = r.take(4)?;
            let v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
            if emit {
                if !v.is_finite() {
                    return Err("a float is not finite".into());
                }
                std::io::Write::write_fmt(out, format_args!("{v}"))
                    .expect("writing to a Vec cannot fail");
            }
        }
        Plan::Double => {
            let b = r.take(8)?;
            let v = f64::from_le_bytes(b.try_into().expect("8 bytes"));
            if emit {
                write_float(v, out)?;
            }
        }
        Plan::Bytes(t) | Plan::String(t) => {
            let n = r.len()?;
            let bytes = r.take(n)?;
            if emit {
                write_text(*t, bytes, out)?;
            }
        }
        Plan::Fixed(n, t) => {
            let bytes = r.take(*n)?;
            if emit {
                write_text(*t, bytes, out)?;
            }
        }
        Plan::Enum(symbols) => {
            let i = r.int()?;
            let s = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| format!("enum index {i} is out of range"))?;
            if emit {
                out.extend_from_slice(s.as_ref().map_err(Clone::clone)?.as_bytes());
            }
        }
        Plan::Array(item) | Plan::Map(item) => {
            let is_map = matches!(p, Plan::Map(_));
            if emit {
                out.push(if is_map { b'{' } else { b'[' });
            }
            let mut first = true;
            loop {
                let mut count = r.long()?;
                if count == 0 {
                    break;
                }
                if count < 0 {
                    count = count.checked_neg().ok_or("a block count is out of range")?;
                    if r.long()? < 0 {
                        return Err("a block size is negative".into());
                    }
                }
                for _ in 0..count {
                    r.tick()?;
                    if emit && !first {
                        out.push(b',');
                    }
                    first = false;
                    if is_map {
                        let n = r.len()?;
                        let key = r.take(n)?;
                        if emit {
                            write_text(Text::Utf8, key, out)?;
                            out.push(b':');
                        }
                    }
                    run(item, r, out, emit, limit)?;
                    if out.len() > limit {
                        return Err(format!("the record decodes to more than {limit} bytes"));
                    }
                }
            }
            if emit {
                out.push(if is_map { b'}' } else { b']' });
            }
        }
        Plan::Union(branches) => {
            let i = r.long()?;
            let b = usize::try_from(i)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or_else(|| format!("union branch {i} is out of range"))?;
            match b {
                Ok(b) => run(b, r, out, emit, limit)?,
                Err(e) => return Err(format!("union branch {i}: {e}")),
            }
        }
        Plan::Record(rec) => {
            if emit {
                out.push(b'{');
            }
            let mut first = true;
            for step in &rec.steps {
                match step {
                    Step::Field(key, plan) => {
                        if emit {
                            if !first {
                                out.push(b',');
                            }
                            first = false;
                            out.extend_from_slice(key);
                        }
                        run(plan, r, out, emit, limit)?;
                    }
                    Step::Skip(plan) => run(plan, r, out, false, limit)?,
                }
            }
            if emit {
                for d in &rec.defaults {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(d);
                }
                out.push(b'}');
            }
            if out.len() > limit {
                return Err(format!("the record decodes to more than {limit} bytes"));
            }
        }
    }
    Ok(())
}

pub(super) fn decode_with(plan: &Plan, body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut r = In {
        b: body,
        pos: 0,
        work: 0,
        max_work: body.len().saturating_mul(4).saturating_add(1024),
    };
    let mut out = Vec::with_capacity(body.len() * 2 + 64);
    run(plan, &mut r, &mut out, true, limit)?;
    if r.pos != body.len() {
        return Err(format!(
            "{} bytes are left over after the record",
            body.len() - r.pos
        ));
    }
    Ok(out)
}
