//! Just enough of a BTF reader to find struct member offsets in the running kernel: the
//! base BTF (`/sys/kernel/btf/vmlinux`) plus a module's split BTF
//! (`/sys/kernel/btf/ib_core`), whose type ids and string offsets continue the base's.
//! The eBPF programs get these offsets at load time, so no kernel's layout is baked in.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("{what}: not BTF ({detail})")]
    Format { what: String, detail: String },
    #[error("struct {0} not found in the kernel's BTF")]
    NoStruct(String),
    #[error("struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

struct Section<'a> {
    types: &'a [u8],
    strings: &'a [u8],
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn section<'a>(what: &str, data: &'a [u8]) -> Result<Section<'a>, BtfError> {
    let bad = |detail: &str| BtfError::Format {
        what: what.into(),
        detail: detail.into(),
    };
    if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
        return Err(bad("bad magic"));
    }
    let hdr_len = u32_at(data, 4).ok_or_else(|| bad("short header"))? as usize;
    let field = |i: usize| {
        u32_at(data, 8 + 4 * i)
            .map(|v| v as usize)
            .ok_or_else(|| bad("short header"))
    };
    let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
    let types = data
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or_else(|| bad("type section out of bounds"))?;
    let strings = data
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or_else(|| bad("string section out of bounds"))?;
    Ok(Section { types, strings })
}

/// Member name -> bit offset, for every named struct.
pub struct Structs {
    structs: HashMap<String, HashMap<String, u32>>,
}

impl Structs {
    /// Parses the base BTF and any number of split (module) BTFs on top of it.
    pub fn parse(base: &[u8], modules: &[(&str, &[u8])]) -> Result<Structs, BtfError> {
        let base_sec = section("vmlinux", base)?;
        let mut out = HashMap::new();
        scan(&base_sec, None, &mut out);
        for (name, data) in modules {
            let sec = section(name, data)?;
            scan(&sec, Some(&base_sec), &mut out);
        }
        Ok(Structs { structs: out })
    }

    /// Byte offset of `strukt.member`.
    pub fn offset(&self, strukt: &str, member: &str) -> Result<u64, BtfError> {
        let s = self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let bits = s.get(member).ok_or_else(|| BtfError::NoMember {
            strukt: strukt.into(),
            member: member.into(),
        })?;
        Ok(u64::from(*bits / 8))
    }
}

/// A string of a split BTF: offsets below the base's string length are the base's.
fn string<'a>(sec: &Section<'a>, base: Option<&Section<'a>>, off: u32) -> &'a str {
    let (strings, off) = match base {
        Some(b) if (off as usize) < b.strings.len() => (b.strings, off as usize),
        Some(b) => (sec.strings, off as usize - b.strings.len()),
        None => (sec.strings, off as usize),
    };
    let rest = strings.get(off..).unwrap_or_default();
    let end = rest.iter().position(|c| *c == 0).unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).unwrap_or("")
}

fn scan<'a>(
    sec: &Section<'a>,
    base: Option<&Section<'a>>,
    out: &mut HashMap<String, HashMap<String, u32>>,
) {
    let t = sec.types;
    let mut pos = 0;
    while pos + 12 <= t.len() {
        let (Some(name_off), Some(info)) = (u32_at(t, pos), u32_at(t, pos + 4)) else {
            break;
        };
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 == 1;
        pos += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,     // int, var, decl_tag
            3 => 12,              // array
            4 | 5 => 12 * vlen,   // struct, union
            6 | 13 => 8 * vlen,   // enum, func_proto
            15 | 19 => 12 * vlen, // datasec, enum64
            _ => 0,               // ptr, fwd, typedef, qualifiers, func, float, type_tag
        };
        if kind == 4 && name_off != 0 {
            let mut members = HashMap::new();
            for m in 0..vlen {
                let at = pos + 12 * m;
                let (Some(m_name), Some(m_off)) = (u32_at(t, at), u32_at(t, at + 8)) else {
                    break;
                };
                let bits = if kind_flag {
                    m_off & 0x00ff_ffff
                } else {
                    m_off
                };
                members.insert(string(sec, base, m_name).to_string(), bits);
            }
            out.entry(string(sec, base, name_off).to_string())
                .or_insert(members);
        }
        pos += extra;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host kernel has BTF for vmlinux: task_struct.tgid must be found at a sane offset.
    #[test]
    fn finds_task_struct_tgid_in_the_running_kernel() {
        let Ok(base) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux here; skipping");
            return;
        };
        let s = Structs::parse(&base, &[]).unwrap();
        let tgid = s.offset("task_struct", "tgid").unwrap();
        assert!(tgid > 0 && tgid < 16384, "tgid at {tgid}");
        assert!(matches!(
            s.offset("task_struct", "nonexistent"),
            Err(BtfError::NoMember { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Structs::parse(b"not btf at all, really not", &[]).is_err());
        let mut hdr = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        hdr.extend_from_slice(&[0xff; 16]);
        assert!(Structs::parse(&hdr, &[]).is_err());
    }
}
