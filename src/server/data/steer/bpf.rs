//! The `bpf()` system call, the few commands steering needs, and a small assembler for
//! BPF instructions: enough to write the program by hand in Rust and load it with no BPF
//! compiler. Layouts follow `include/uapi/linux/bpf.h`; each attribute struct is one arm of
//! `union bpf_attr`, passed with its own size (the kernel zero-fills the rest).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

// Commands (`enum bpf_cmd`).
const BPF_MAP_CREATE: libc::c_int = 0;
#[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
#[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
const BPF_MAP_UPDATE_BATCH: libc::c_int = 26;
#[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
const BPF_MAP_DELETE_BATCH: libc::c_int = 27;
const BPF_LINK_CREATE: libc::c_int = 28;
const BPF_LINK_UPDATE: libc::c_int = 29;

/// `BPF_MAP_TYPE_HASH`.
pub const MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_SOCKMAP`.
pub const MAP_TYPE_SOCKMAP: u32 = 15;
/// `BPF_PROG_TYPE_SK_LOOKUP`.
pub const PROG_TYPE_SK_LOOKUP: u32 = 30;
/// `BPF_SK_LOOKUP`, the attach type of a network namespace's socket lookup.
pub const ATTACH_SK_LOOKUP: u32 = 36;
/// `BPF_LINK_TYPE_NETNS`.
pub const LINK_TYPE_NETNS: u32 = 5;
/// `BPF_F_NO_PREALLOC`: a hash map allocates each element when it is inserted.
pub const F_NO_PREALLOC: u32 = 1;
/// `BPF_ANY` for map updates: create or replace.
const BPF_ANY: u64 = 0;

/// The kernel's "operation not supported" (`ENOTSUPP`, not `EOPNOTSUPP`): unknown to libc.
pub const ENOTSUPP: i32 = 524;

fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a plain `#[repr(C)]` arm of `union bpf_attr`, valid for its size; the
    // kernel reads (and for some commands writes) no more than that size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_from(ret: libc::c_long) -> OwnedFd {
    // SAFETY: the commands this is called for return a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(ret as RawFd) }
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(name.bytes().take(15)) {
        *o = b;
    }
    out
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// Creates a map; its name shows in `bpftool map` (15 bytes at most).
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: flags,
        map_name: name16(name),
        ..Default::default()
    };
    sys_bpf(BPF_MAP_CREATE, &mut attr).map(fd_from)
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Inserts or replaces one element; `key` and `value` must have the map's sizes.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags: BPF_ANY,
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Reads one element into `value`; `Ok(false)` when the key is absent.
#[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    match sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes one element; `Ok(false)` when the key was absent.
pub fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<bool> {
    let mut attr =
        MapElemAttr { map_fd: map.as_raw_fd() as u32, _pad: 0, key: key.as_ptr() as u64, value: 0, flags: 0 };
    match sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

#[repr(C)]
#[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Inserts or replaces `count` elements in one call (`keys` and `values` hold them back to
/// back). On an error, returns it with how many were done before it.
#[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
pub fn map_update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> Result<(), (io::Error, u32)> {
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: BPF_ANY,
        flags: 0,
    };
    match sys_bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
        Ok(_) => Ok(()),
        Err(e) => Err((e, attr.count)),
    }
}

/// Deletes `count` elements in one call. A missing key stops the batch with `ENOENT`; on an
/// error, returns it with how many were deleted before it.
#[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
pub fn map_delete_batch(map: BorrowedFd<'_>, keys: &[u8], count: u32) -> Result<(), (io::Error, u32)> {
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: 0,
        count,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    match sys_bpf(BPF_MAP_DELETE_BATCH, &mut attr) {
        Ok(_) => Ok(()),
        Err(e) => Err((e, attr.count)),
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Loads a program. A refusal by the verifier comes back as `EINVAL` (or `EACCES`) with the
/// verifier's log appended to the message.
pub fn prog_load(prog_type: u32, attach_type: u32, insns: &[Insn], name: &str) -> io::Result<OwnedFd> {
    let license = b"Dual MIT/GPL\0";
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16(name),
        expected_attach_type: attach_type,
        ..Default::default()
    };
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd_from(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EACCES)) => {
            // Load again with the verifier's log, to say why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            match sys_bpf(BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => Ok(fd_from(fd)),
                Err(again) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    let text = String::from_utf8_lossy(&log[..end]);
                    let text = text.trim();
                    if text.is_empty() {
                        Err(again)
                    } else {
                        Err(io::Error::new(again.kind(), format!("{again}; verifier: {text}")))
                    }
                }
            }
        }
        Err(e) => Err(e),
    }
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// Attaches a program to a target (here a network namespace) and returns the link: the
/// program stays attached while a descriptor of the link is open.
pub fn link_create(prog: BorrowedFd<'_>, target: BorrowedFd<'_>, attach_type: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: target.as_raw_fd() as u32,
        attach_type,
        flags: 0,
    };
    sys_bpf(BPF_LINK_CREATE, &mut attr).map(fd_from)
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Replaces the program of a link atomically: no lookup runs without a program.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    sys_bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn obj_info<T: Default>(fd: BorrowedFd<'_>) -> io::Result<T> {
    let mut info = T::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<T>() as u32,
        info: &mut info as *mut T as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// The head of `struct bpf_map_info`.
#[repr(C)]
#[derive(Default, Debug)]
pub struct MapInfo {
    /// Map type.
    pub map_type: u32,
    /// Kernel-wide id.
    pub id: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Creation flags.
    pub map_flags: u32,
}

/// What the kernel says of a map descriptor (`EINVAL` when it is not a BPF object).
pub fn map_info(fd: BorrowedFd<'_>) -> io::Result<MapInfo> {
    obj_info(fd)
}

/// The head of `struct bpf_prog_info`, up to the ids of the maps it uses.
#[repr(C)]
#[derive(Default, Debug)]
pub struct ProgInfo {
    /// Program type.
    pub prog_type: u32,
    /// Kernel-wide id.
    pub id: u32,
    /// Hash of the instructions as loaded.
    pub tag: [u8; 8],
    jited_prog_len: u32,
    /// Length of the program after the verifier, in bytes.
    pub xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    /// How many maps the program uses (with `map_ids`, the kernel fills them in).
    pub nr_map_ids: u32,
    map_ids: u64,
}

/// What the kernel says of a program descriptor, with the ids of the maps it uses.
pub fn prog_info(fd: BorrowedFd<'_>) -> io::Result<(ProgInfo, Vec<u32>)> {
    let head: ProgInfo = obj_info(fd)?;
    let mut ids = vec![0u32; head.nr_map_ids as usize];
    let mut info =
        ProgInfo { nr_map_ids: ids.len() as u32, map_ids: ids.as_mut_ptr() as u64, ..Default::default() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    ids.truncate(info.nr_map_ids.min(ids.len() as u32) as usize);
    info.map_ids = 0;
    Ok((info, ids))
}

/// The head of `struct bpf_link_info` for a network namespace link.
#[repr(C)]
#[derive(Default, Debug)]
pub struct LinkInfo {
    /// Link type.
    pub link_type: u32,
    /// Kernel-wide id.
    pub id: u32,
    /// Id of the program the link holds.
    pub prog_id: u32,
    _pad: u32,
    /// Inode of the namespace (0 once the namespace is gone).
    pub netns_ino: u32,
    /// Attach type.
    pub attach_type: u32,
}

/// What the kernel says of a link descriptor.
pub fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    obj_info(fd)
}

// ---- The assembler ----

/// One BPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// A register: r0 return value, r1-r5 arguments, r6-r9 kept across calls, r10 frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(pub u8);

/// Return value and helper result.
pub const R0: Reg = Reg(0);
/// First argument; the context at entry.
pub const R1: Reg = Reg(1);
/// Second argument.
pub const R2: Reg = Reg(2);
/// Third argument.
pub const R3: Reg = Reg(3);
/// Kept across calls.
pub const R6: Reg = Reg(6);
/// Kept across calls.
pub const R7: Reg = Reg(7);
/// Kept across calls.
pub const R8: Reg = Reg(8);
/// Kept across calls.
pub const R9: Reg = Reg(9);
/// Frame pointer (read only): the stack is the 512 bytes below it.
pub const R10: Reg = Reg(10);

/// Width of a memory access.
#[derive(Clone, Copy, Debug)]
pub enum Size {
    /// 1 byte.
    B = 0x10,
    /// 2 bytes.
    H = 0x08,
    /// 4 bytes.
    W = 0x00,
    /// 8 bytes.
    DW = 0x18,
}

// Instruction classes, modes, operations (`bpf_common.h`, `bpf.h`).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const STX: u8 = 0x03;
const ALU64: u8 = 0x07;
const JMP: u8 = 0x05;
const IMM: u8 = 0x00;
const MEM: u8 = 0x60;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const AND: u8 = 0x50;
const MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
/// `BPF_PSEUDO_MAP_FD`: the immediate of a 64-bit load is a map descriptor.
const PSEUDO_MAP_FD: u8 = 1;

const fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
    #[cfg(target_endian = "little")]
    let regs = (src.0 << 4) | (dst.0 & 0x0f);
    #[cfg(target_endian = "big")]
    let regs = (dst.0 << 4) | (src.0 & 0x0f);
    Insn { code, regs, off, imm }
}

/// `dst = src` (64 bits).
pub const fn mov64(dst: Reg, src: Reg) -> Insn {
    insn(ALU64 | MOV | X, dst, src, 0, 0)
}
/// `dst = imm` (64 bits, sign-extended).
pub const fn mov64_imm(dst: Reg, imm: i32) -> Insn {
    insn(ALU64 | MOV | K, dst, Reg(0), 0, imm)
}
/// `dst += imm` (64 bits).
pub const fn add64_imm(dst: Reg, imm: i32) -> Insn {
    insn(ALU64 | ADD | K, dst, Reg(0), 0, imm)
}
/// `dst &= imm` (64 bits).
pub const fn and64_imm(dst: Reg, imm: i32) -> Insn {
    insn(ALU64 | AND | K, dst, Reg(0), 0, imm)
}
/// `dst = *(size *)(src + off)`.
pub const fn ldx(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
    insn(LDX | MEM | size as u8, dst, src, off, 0)
}
/// `*(size *)(dst + off) = src`.
pub const fn stx(size: Size, dst: Reg, off: i16, src: Reg) -> Insn {
    insn(STX | MEM | size as u8, dst, src, off, 0)
}
/// Calls helper number `helper`: arguments in r1-r5, result in r0, r1-r5 clobbered.
pub const fn call(helper: i32) -> Insn {
    insn(JMP | CALL, Reg(0), Reg(0), 0, helper)
}
/// Returns r0.
pub const fn exit() -> Insn {
    insn(JMP | EXIT, Reg(0), Reg(0), 0, 0)
}
/// `dst = map` (a map descriptor, which the kernel turns into a map pointer): two slots.
pub const fn ld_map_fd(dst: Reg, fd: RawFd) -> [Insn; 2] {
    [insn(LD | IMM | Size::DW as u8, dst, Reg(PSEUDO_MAP_FD), 0, fd), insn(0, Reg(0), Reg(0), 0, 0)]
}

/// A place in the program that jumps name before it is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Builds a program: instructions in order, jumps to labels resolved at the end.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// A new label, placed later with [`Asm::bind`].
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    /// Places `label` at the next instruction.
    pub fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.insns.len());
    }
    /// Appends instructions.
    pub fn push(&mut self, insns: &[Insn]) {
        self.insns.extend_from_slice(insns);
    }
    fn jump(&mut self, code: u8, dst: Reg, imm: i32, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.insns.push(insn(code, dst, Reg(0), 0, imm));
    }
    /// `goto to`.
    pub fn ja(&mut self, to: Label) {
        self.jump(JMP | JA, Reg(0), 0, to);
    }
    /// `if dst == imm goto to`.
    pub fn jeq_imm(&mut self, dst: Reg, imm: i32, to: Label) {
        self.jump(JMP | JEQ | K, dst, imm, to);
    }
    /// `if dst != imm goto to`.
    pub fn jne_imm(&mut self, dst: Reg, imm: i32, to: Label) {
        self.jump(JMP | JNE | K, dst, imm, to);
    }
    /// The instructions, every jump resolved.
    pub fn finish(mut self) -> Vec<Insn> {
        for &(at, label) in &self.fixups {
            let target = self.labels[label.0].expect("every label used is bound");
            self.insns[at].off = (target as isize - at as isize - 1) as i16;
        }
        self.insns
    }
}
