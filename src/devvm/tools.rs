//! Host programs the dev VM commands need, and how to install them.

use super::DevvmError;
use crate::platform::which;

/// A program and the Debian package that ships it.
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const MMDEBSTRAP: Tool = Tool {
    program: "mmdebstrap",
    package: "mmdebstrap",
};
pub const MKE2FS: Tool = Tool {
    program: "mke2fs",
    package: "e2fsprogs",
};
pub const QEMU_IMG: Tool = Tool {
    program: "qemu-img",
    package: "qemu-utils",
};
pub const QEMU: Tool = Tool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
pub const SSH: Tool = Tool {
    program: "ssh",
    package: "openssh-client",
};
pub const SSH_KEYGEN: Tool = Tool {
    program: "ssh-keygen",
    package: "openssh-client",
};
pub const SFDISK: Tool = Tool {
    program: "sfdisk",
    package: "fdisk",
};
/// With GRUB's BIOS images and modules, which come in the same package.
pub const GRUB_MKIMAGE: Tool = Tool {
    program: "grub-mkimage",
    package: "grub-pc-bin",
};
pub const TAR: Tool = Tool {
    program: "tar",
    package: "tar",
};

/// Fails, naming every missing program and the one command that installs
/// them all, unless every tool is there.
pub fn require(tools: &[Tool]) -> Result<(), DevvmError> {
    let missing: Vec<&Tool> = tools
        .iter()
        .filter(|t| which(t.program).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let programs = missing.iter().map(|t| t.program).collect();
    let mut packages: Vec<&'static str> = missing.iter().map(|t| t.package).collect();
    packages.dedup();
    Err(DevvmError::MissingTools { programs, packages })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let t = Tool {
            program: "kiln-no-such-program",
            package: "kiln-no-such-package",
        };
        let e = require(&[t]).unwrap_err();
        assert!(matches!(e, DevvmError::MissingTools { .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("kiln-no-such-program"), "{e}");
        assert!(e.contains("apt-get install -y kiln-no-such-package"), "{e}");
    }
}
