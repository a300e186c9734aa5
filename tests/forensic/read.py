#!/usr/bin/env python3
"""Read guest memory and CPU state back from `hvm-inspect extract` outputs
with the forensic tools themselves, for the consumer tests
(inspect/tests/extract.rs). Prints one JSON object.

  read.py raw  FILE ADDR LEN   volatility3's FileLayer (a flat file)
  read.py lime FILE ADDR LEN   volatility3's LimeLayer over a FileLayer
  read.py elf  FILE ADDR LEN   pyelftools: the PT_LOAD whose p_paddr holds ADDR
  read.py notes FILE           pyelftools: each NT_PRSTATUS's pid, rip, rsp
                               and each QEMU note's version, size, rip, cr0-cr4

ADDR and LEN are decimal or 0x-hex; the bytes come back as hex.
"""
import json
import pathlib
import struct
import sys


def vol_layers(kind, path):
    from volatility3.framework import contexts
    from volatility3.framework.layers.physical import FileLayer

    ctx = contexts.Context()
    ctx.config["base.location"] = pathlib.Path(path).resolve().as_uri()
    ctx.add_layer(FileLayer(ctx, "base", "base"))
    if kind == "raw":
        return ctx.layers["base"]
    from volatility3.framework.layers.lime import LimeLayer

    ctx.config["lime.base_layer"] = "base"
    ctx.add_layer(LimeLayer(ctx, "lime", "lime"))
    return ctx.layers["lime"]


def elf_read(path, addr, length):
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            h = seg.header
            if h.p_type != "PT_LOAD":
                continue
            if h.p_paddr <= addr and addr + length <= h.p_paddr + h.p_filesz:
                f.seek(h.p_offset + addr - h.p_paddr)
                return f.read(length)
    raise SystemExit(f"no PT_LOAD holds {addr:#x}+{length:#x}")


def notes(path):
    from elftools.elf.elffile import ELFFile

    out = {"prstatus": [], "qemu": [], "loads": 0}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            if seg.header.p_type == "PT_LOAD":
                out["loads"] += 1
            if seg.header.p_type != "PT_NOTE":
                continue
            for n in seg.iter_notes():
                desc = n["n_desc"]
                if n["n_name"] == "CORE" and n["n_type"] == "NT_PRSTATUS":
                    # pyelftools decodes elf_prstatus; pr_reg stays raw.
                    raw = n["n_descdata"]
                    pid = struct.unpack_from("<i", raw, 32)[0]
                    regs = struct.unpack_from("<27Q", raw, 112)
                    out["prstatus"].append(
                        {"pid": pid, "size": len(raw), "rip": regs[16], "rsp": regs[19]}
                    )
                elif n["n_name"] == "QEMU":
                    raw = desc if isinstance(desc, bytes) else n["n_descdata"]
                    version, size = struct.unpack_from("<II", raw, 0)
                    regs = struct.unpack_from("<18Q", raw, 8)
                    cr = struct.unpack_from("<5Q", raw, 8 + 18 * 8 + 10 * 24)
                    out["qemu"].append(
                        {"version": version, "size": size, "len": len(raw),
                         "rip": regs[16], "rsp": regs[6], "cr": list(cr)}
                    )
    return out


def main():
    kind = sys.argv[1]
    if kind == "notes":
        print(json.dumps(notes(sys.argv[2])))
        return
    path, addr, length = sys.argv[2], int(sys.argv[3], 0), int(sys.argv[4], 0)
    if kind == "elf":
        data = elf_read(path, addr, length)
    else:
        data = vol_layers(kind, path).read(addr, length)
    print(json.dumps({"hex": data.hex()}))


if __name__ == "__main__":
    main()
