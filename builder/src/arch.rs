//! Architectures: names as the spec and os-release use them, and detection
//! from ELF headers.

use anyhow::{bail, Result};

/// A CPU architecture nodebake builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64 (`amd64` in Debian, `x86_64` in RPM).
    X86_64,
    /// 64-bit ARM (`arm64` in Debian, `aarch64` in RPM).
    Aarch64,
    /// 32-bit x86 (recognised for refusal).
    I386,
    /// 32-bit ARM (recognised for refusal).
    Arm,
    /// ppc64le (recognised for refusal).
    Ppc64le,
    /// s390x (recognised for refusal).
    S390x,
    /// RISC-V 64 (recognised for refusal).
    Riscv64,
}

impl Arch {
    /// Parses a name as used by RPM, Debian or uname.
    pub fn from_name(s: &str) -> Result<Arch> {
        Ok(match s {
            "x86_64" | "amd64" => Arch::X86_64,
            "aarch64" | "arm64" => Arch::Aarch64,
            "i386" | "i686" | "i586" => Arch::I386,
            "armhf" | "armv7hl" | "armel" | "arm" => Arch::Arm,
            "ppc64le" | "ppc64el" => Arch::Ppc64le,
            "s390x" => Arch::S390x,
            "riscv64" => Arch::Riscv64,
            _ => bail!("unknown architecture `{s}`"),
        })
    }

    /// Canonical (RPM/uname) name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::I386 => "i686",
            Arch::Arm => "armv7hl",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// Architecture of an ELF file from its first bytes (at least 20), or
    /// `None` if it is not ELF or the machine is unknown.
    pub fn from_elf(head: &[u8]) -> Option<Arch> {
        if head.len() < 20 || &head[..4] != b"\x7fELF" {
            return None;
        }
        let machine = match head[5] {
            1 => u16::from_le_bytes([head[18], head[19]]),
            2 => u16::from_be_bytes([head[18], head[19]]),
            _ => return None,
        };
        Some(match machine {
            62 => Arch::X86_64,
            183 => Arch::Aarch64,
            3 => Arch::I386,
            40 => Arch::Arm,
            21 => Arch::Ppc64le,
            22 => Arch::S390x,
            243 => Arch::Riscv64,
            _ => return None,
        })
    }

    /// Whether a package architecture string (`noarch`, `all`, ...) fits.
    pub fn accepts_package_arch(self, pkg_arch: &str) -> bool {
        matches!(pkg_arch, "noarch" | "all" | "(none)" | "")
            || Arch::from_name(pkg_arch)
                .map(|a| a == self)
                .unwrap_or(false)
    }
}

/// Facts about an ELF file needed by the build: its architecture and
/// whether it is dynamically linked (`PT_INTERP` or `PT_DYNAMIC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfInfo {
    /// Machine.
    pub arch: Option<Arch>,
    /// Has an interpreter or a dynamic section.
    pub dynamic: bool,
}

/// Reads [`ElfInfo`] from a whole ELF file (64-bit, either endianness).
pub fn elf_info(bytes: &[u8]) -> Option<ElfInfo> {
    let arch = Arch::from_elf(bytes);
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return None;
    }
    let le = bytes[5] == 1;
    let u16_at = |o: usize| -> Option<u64> {
        let b = bytes.get(o..o + 2)?;
        Some(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        } as u64)
    };
    let u32_at = |o: usize| -> Option<u64> {
        let b: [u8; 4] = bytes.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as u64)
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let phoff = u64_at(32)? as usize;
    let phentsize = u16_at(54)? as usize;
    let phnum = u16_at(56)? as usize;
    let mut dynamic = false;
    for i in 0..phnum.min(4096) {
        let p_type = u32_at(phoff + i * phentsize)?;
        if p_type == 2 || p_type == 3 {
            dynamic = true;
        }
    }
    Some(ElfInfo { arch, dynamic })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_x86_64_or_aarch64() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let info = elf_info(&exe).unwrap();
        let expect = Arch::from_name(std::env::consts::ARCH).unwrap();
        assert_eq!(info.arch, Some(expect));
    }

    #[test]
    fn names_roundtrip() {
        assert_eq!(Arch::from_name("amd64").unwrap(), Arch::X86_64);
        assert!(Arch::X86_64.accepts_package_arch("noarch"));
        assert!(!Arch::X86_64.accepts_package_arch("aarch64"));
        assert!(Arch::from_name("vax").is_err());
    }
}
