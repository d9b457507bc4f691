//! A pre-flight check of an ELF shared library before the dynamic loader sees it.
//!
//! The loader maps segments as the program headers describe them; a truncated file whose
//! headers promise more bytes than it has is mapped anyway, and the first touch of a page
//! past the end of the file raises SIGBUS in the host. So the host checks, from the bytes it
//! already holds, that the file is a 64-bit little-endian shared object for this machine
//! and that every header and segment lies inside the file.

/// `e_machine` of the machine this host runs on.
fn host_machine() -> Option<(u16, &'static str)> {
    match std::env::consts::ARCH {
        "x86_64" => Some((62, "x86_64")),
        "aarch64" => Some((183, "aarch64")),
        "riscv64" => Some((243, "riscv64")),
        "powerpc64" => Some((21, "powerpc64")),
        "s390x" => Some((22, "s390x")),
        "loongarch64" => Some((258, "loongarch64")),
        _ => None,
    }
}

fn machine_name(machine: u16) -> String {
    match machine {
        3 => "x86 (32-bit)".into(),
        40 => "arm (32-bit)".into(),
        62 => "x86_64".into(),
        183 => "aarch64".into(),
        243 => "riscv".into(),
        other => format!("e_machine {other}"),
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Checks `bytes`; the error says what is wrong in words.
pub(super) fn check(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err("it is not an ELF file (no \\x7fELF magic)".into());
    }
    let truncated = || "it is truncated: the ELF header is cut short".to_owned();
    if bytes.len() < 64 {
        return Err(truncated());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("it is not a 64-bit little-endian ELF file".into());
    }
    let kind = u16_at(bytes, 16).ok_or_else(truncated)?;
    if kind != 3 {
        return Err(format!("it is not a shared library (ELF type {kind}, a shared object is 3)"));
    }
    let machine = u16_at(bytes, 18).ok_or_else(truncated)?;
    if let Some((expected, host)) = host_machine()
        && machine != expected
    {
        return Err(format!("it is built for {}, this host is {host}", machine_name(machine)));
    }
    let length = bytes.len() as u64;
    let table = |offset: u64, size: u16, count: u16, what: &str| -> Result<(), String> {
        let end = offset.checked_add(u64::from(size) * u64::from(count));
        match end {
            Some(end) if end <= length => Ok(()),
            _ => Err(format!("it is truncated: its {what} end past the file's {length} bytes")),
        }
    };
    let program_offset = u64_at(bytes, 32).ok_or_else(truncated)?;
    let section_offset = u64_at(bytes, 40).ok_or_else(truncated)?;
    let (program_size, program_count) =
        (u16_at(bytes, 54).ok_or_else(truncated)?, u16_at(bytes, 56).ok_or_else(truncated)?);
    let (section_size, section_count) =
        (u16_at(bytes, 58).ok_or_else(truncated)?, u16_at(bytes, 60).ok_or_else(truncated)?);
    table(program_offset, program_size, program_count, "program headers")?;
    if section_count > 0 {
        table(section_offset, section_size, section_count, "section headers")?;
    }
    if usize::from(program_size) < 56 {
        return Err(format!("its program header size {program_size} is smaller than 56"));
    }
    for index in 0..usize::from(program_count) {
        let header = program_offset as usize + index * usize::from(program_size);
        let segment_type = u32_at(bytes, header).ok_or_else(truncated)?;
        let file_offset = u64_at(bytes, header + 8).ok_or_else(truncated)?;
        let file_size = u64_at(bytes, header + 32).ok_or_else(truncated)?;
        if file_size > 0 && file_offset.checked_add(file_size).is_none_or(|end| end > length) {
            return Err(format!(
                "it is truncated: segment {index} (type {segment_type:#x}) needs bytes up to {} but the file has {length}",
                file_offset.saturating_add(file_size)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_whole_shared_object() {
        assert!(check(b"").unwrap_err().contains("not an ELF"));
        assert!(check(b"hello world").unwrap_err().contains("not an ELF"));
        assert!(check(b"\x7fELF\x02\x01").unwrap_err().contains("truncated"));
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 1;
        header[5] = 1;
        assert!(check(&header).unwrap_err().contains("64-bit"));
        header[4] = 2;
        header[16] = 2; // ET_EXEC
        assert!(check(&header).unwrap_err().contains("not a shared library"));
    }

    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn accepts_a_real_library_and_catches_its_truncation_and_foreign_machine() {
        let libc =
            ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
                .into_iter()
                .find_map(|path| std::fs::read(path).ok())
                .expect("libc is readable");
        check(&libc).unwrap();
        assert!(check(&libc[..libc.len() / 2]).unwrap_err().contains("truncated"));
        let mut foreign = libc.clone();
        foreign[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(check(&foreign).unwrap_err(), "it is built for aarch64, this host is x86_64");
    }
}
