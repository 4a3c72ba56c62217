//! The steering program, written as BPF instructions (what a C compiler would make of the
//! pseudo-C in each comment). It runs once per socket lookup of the namespace: each new TCP
//! connection (SYN) and each UDP datagram that no connected socket takes.
//!
//! ```text
//! key = { protocol, family, local_port, local address (v4: first 4 bytes) }
//! dest = bindings[key] ?: bindings[key with address 0]    // exact address, then wildcard
//! if !dest: return SK_PASS                                 // not ours: the usual lookup
//! sk = sockets[dest.slot]
//! if !sk: return SK_DROP                                   // ours, but no socket: refused
//! err = bpf_sk_assign(ctx, sk, dest.flags & NO_REUSEPORT)
//! bpf_sk_release(sk)
//! return err && err != -EEXIST ? SK_DROP : SK_PASS     // EEXIST: an earlier program chose
//! ```

use std::os::fd::RawFd;

use super::bpf::{self, Asm, Insn, Size, R0, R1, R10, R2, R3, R6, R7, R8, R9};

// Offsets in `struct bpf_sk_lookup` (the context).
const CTX_FAMILY: i16 = 8;
const CTX_PROTOCOL: i16 = 12;
const CTX_LOCAL_IP4: i16 = 40;
const CTX_LOCAL_IP6: i16 = 44;
const CTX_LOCAL_PORT: i16 = 60;

// Helpers (`enum bpf_func_id`).
const MAP_LOOKUP_ELEM: i32 = 1;
const SK_RELEASE: i32 = 86;
const SK_ASSIGN: i32 = 124;

const SK_DROP: i32 = 0;
const SK_PASS: i32 = 1;

/// `BPF_SK_LOOKUP_F_NO_REUSEPORT`: the chosen socket takes the connection even when it
/// belongs to a `SO_REUSEPORT` group.
pub const F_NO_REUSEPORT: u32 = 1 << 1;

// The key on the stack: r10-20 .. r10-1, laid out as `super::Key`; the slot at r10-24.
const KEY: i16 = -20;
const KEY_PROTOCOL: i16 = KEY;
const KEY_FAMILY: i16 = KEY + 1;
const KEY_PORT: i16 = KEY + 2;
const KEY_ADDR: i16 = KEY + 4;
const SLOT: i16 = -24;

/// The program, with the descriptors of its two maps.
pub fn instructions(bindings: RawFd, sockets: RawFd) -> Vec<Insn> {
    use bpf::{add64_imm, and64_imm, call, exit, ld_map_fd, ldx, mov64, mov64_imm, stx};
    let mut a = Asm::default();
    let (v6, lookup, found, pass, drop) = (a.label(), a.label(), a.label(), a.label(), a.label());

    // r6 = ctx; the head of the key.
    a.push(&[
        mov64(R6, R1),
        ldx(Size::W, R2, R6, CTX_PROTOCOL),
        stx(Size::B, R10, KEY_PROTOCOL, R2),
        ldx(Size::W, R2, R6, CTX_FAMILY),
        stx(Size::B, R10, KEY_FAMILY, R2),
        ldx(Size::W, R3, R6, CTX_LOCAL_PORT),
        stx(Size::H, R10, KEY_PORT, R3),
        // r7 = 0 stays for the wildcard; the address starts zeroed.
        mov64_imm(R7, 0),
        stx(Size::DW, R10, KEY_ADDR, R7),
        stx(Size::DW, R10, KEY_ADDR + 8, R7),
    ]);
    a.jne_imm(R2, libc::AF_INET, v6);
    a.push(&[ldx(Size::W, R3, R6, CTX_LOCAL_IP4), stx(Size::W, R10, KEY_ADDR, R3)]);
    a.ja(lookup);
    a.bind(v6);
    a.jne_imm(R2, libc::AF_INET6, pass);
    for i in 0..4 {
        a.push(&[ldx(Size::W, R3, R6, CTX_LOCAL_IP6 + 4 * i), stx(Size::W, R10, KEY_ADDR + 4 * i, R3)]);
    }

    // The exact address, then the wildcard.
    a.bind(lookup);
    a.push(&ld_map_fd(R1, bindings));
    a.push(&[mov64(R2, R10), add64_imm(R2, KEY as i32), call(MAP_LOOKUP_ELEM)]);
    a.jne_imm(R0, 0, found);
    a.push(&[stx(Size::DW, R10, KEY_ADDR, R7), stx(Size::DW, R10, KEY_ADDR + 8, R7)]);
    a.push(&ld_map_fd(R1, bindings));
    a.push(&[mov64(R2, R10), add64_imm(R2, KEY as i32), call(MAP_LOOKUP_ELEM)]);
    a.jeq_imm(R0, 0, pass);

    // r9 = flags; the socket of the slot.
    a.bind(found);
    a.push(&[
        ldx(Size::W, R2, R0, 0),
        ldx(Size::W, R9, R0, 4),
        and64_imm(R9, F_NO_REUSEPORT as i32),
        stx(Size::W, R10, SLOT, R2),
    ]);
    a.push(&ld_map_fd(R1, sockets));
    a.push(&[mov64(R2, R10), add64_imm(R2, SLOT as i32), call(MAP_LOOKUP_ELEM)]);
    a.jeq_imm(R0, 0, drop);
    a.push(&[
        mov64(R8, R0),
        mov64(R1, R6),
        mov64(R2, R8),
        mov64(R3, R9),
        call(SK_ASSIGN),
        mov64(R9, R0),
        mov64(R1, R8),
        call(SK_RELEASE),
    ]);
    // Another program attached before this one chose already (a second steering during an
    // upgrade): its choice holds.
    a.jeq_imm(R9, -libc::EEXIST, pass);
    a.jne_imm(R9, 0, drop);

    a.bind(pass);
    a.push(&[mov64_imm(R0, SK_PASS), exit()]);
    a.bind(drop);
    a.push(&[mov64_imm(R0, SK_DROP), exit()]);
    a.finish()
}
