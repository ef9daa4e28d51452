package qemu

import "fmt"

// Real-mode x86 boot sectors, assembled here so neither the probe nor the tests need an assembler
// or a guest image. The BIOS loads sector 0 at 0x7c00 and jumps there.

const (
	bootSectorSize = 512
	bootLoadAddr   = 0x7c00
)

// Debug devices the probe guest talks to.
const (
	debugconPort  = 0xe9 // isa-debugcon's default port
	debugExitPort = 0xf4 // isa-debug-exit, configured with iobase=0xf4
	// probeExitValue is written to isa-debug-exit; QEMU then exits with (value<<1)|1.
	probeExitValue    = 0x21
	probeExitCode     = probeExitValue<<1 | 1
	serialCOM1DataReg = 0x3f8
)

// probeStages are written to debugcon as the probe guest passes each stage: real mode, long mode,
// and the end of a busy loop. Where a broken accelerator stalls shows in how far it got.
const probeStages = "RLC"

// probeLoopIterations sizes the probe's busy loop: tens of milliseconds with working KVM, a fraction
// of a second under TCG. Where nested KVM merely pretends to work, guests run at a few million
// instructions per second — enough for a boot sector, far too slow for this loop (or a kernel).
const probeLoopIterations = 1 << 26

// asm16 is a tiny assembler for the few 16-bit instructions the boot sectors use, with labels for
// short jumps and absolute addresses.
type asm16 struct {
	code   []byte
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at    int // offset of the operand
	label string
	rel8  bool // 8-bit displacement from the end of the operand; else 16-bit absolute address
}

func newAsm16() *asm16 { return &asm16{labels: map[string]int{}} }

func (a *asm16) emit(b ...byte)     { a.code = append(a.code, b...) }
func (a *asm16) label(name string)  { a.labels[name] = len(a.code) }
func (a *asm16) cli()               { a.emit(0xfa) }
func (a *asm16) sti()               { a.emit(0xfb) }
func (a *asm16) hlt()               { a.emit(0xf4) }
func (a *asm16) lodsb()             { a.emit(0xac) }
func (a *asm16) movALImm(v byte)    { a.emit(0xb0, v) }
func (a *asm16) outImmAL(port byte) { a.emit(0xe6, port) }
func (a *asm16) outDXAL()           { a.emit(0xee) }
func (a *asm16) testALAL()          { a.emit(0x84, 0xc0) }
func (a *asm16) xorAXAX()           { a.emit(0x31, 0xc0) }
func (a *asm16) movDSAX()           { a.emit(0x8e, 0xd8) }
func (a *asm16) movDXImm(v uint16)  { a.emit(0xba, byte(v), byte(v>>8)) }
func (a *asm16) movCXImm(v uint16)  { a.emit(0xb9, byte(v), byte(v>>8)) }
func (a *asm16) jmp(label string)   { a.jump(0xeb, label) }
func (a *asm16) jz(label string)    { a.jump(0x74, label) }
func (a *asm16) jnz(label string)   { a.jump(0x75, label) }
func (a *asm16) loop(label string)  { a.jump(0xe2, label) }
func (a *asm16) data(b ...byte)     { a.emit(b...) }

// movSILabel loads SI with the load address of a label.
func (a *asm16) movSILabel(label string) {
	a.emit(0xbe)
	a.abs16(label)
}

// imm32 emits a little-endian 32-bit immediate.
func (a *asm16) imm32(v uint32) { a.emit(byte(v), byte(v>>8), byte(v>>16), byte(v>>24)) }

// abs16 emits the 16-bit load address of a label.
func (a *asm16) abs16(label string) {
	a.fixups = append(a.fixups, fixup{at: len(a.code), label: label})
	a.emit(0, 0)
}

// align pads with zeros to a multiple of n bytes (the load address is 512-aligned).
func (a *asm16) align(n int) {
	for len(a.code)%n != 0 {
		a.emit(0)
	}
}

func (a *asm16) jump(op byte, label string) {
	a.emit(op)
	a.fixups = append(a.fixups, fixup{at: len(a.code), label: label, rel8: true})
	a.emit(0)
}

// sector resolves labels and returns the 512-byte boot sector with its 0x55AA signature.
func (a *asm16) sector() ([]byte, error) {
	if len(a.code) > bootSectorSize-2 {
		return nil, fmt.Errorf("boot sector code is %d bytes, max %d", len(a.code), bootSectorSize-2)
	}
	out := make([]byte, bootSectorSize)
	copy(out, a.code)
	for _, f := range a.fixups {
		target, ok := a.labels[f.label]
		if !ok {
			return nil, fmt.Errorf("boot sector: undefined label %q", f.label)
		}
		if f.rel8 {
			disp := target - (f.at + 1)
			if disp < -128 || disp > 127 {
				return nil, fmt.Errorf("boot sector: jump to %q out of range (%d)", f.label, disp)
			}
			out[f.at] = byte(int8(disp))
			continue
		}
		addr := bootLoadAddr + target
		out[f.at], out[f.at+1] = byte(addr), byte(addr>>8)
	}
	out[510], out[511] = 0x55, 0xaa
	return out, nil
}

// probeBootSector switches from real mode straight to 64-bit long mode (identity-mapped first 2
// MiB), runs probeLoopIterations of a busy loop, and ends QEMU through isa-debug-exit with
// probeExitCode, reporting each stage of probeStages on debugcon. Should the exit device be
// missing, it halts forever.
func probeBootSector() ([]byte, error) {
	a := newAsm16()
	// 16-bit real mode.
	a.cli()
	a.movALImm(probeStages[0])
	a.outImmAL(debugconPort)
	a.emit(0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0)       // xor ax,ax; mov ds,ax; mov es,ax; mov ss,ax
	a.emit(0xbc, 0x00, 0x7c)                                     // mov sp,0x7c00
	a.emit(0xbf, 0x00, 0x10, 0xb9, 0x00, 0x18, 0xfc, 0xf3, 0xab) // zero 0x1000-0x3fff: mov di; mov cx; cld; rep stosw
	a.emit(0xc7, 0x06, 0x00, 0x10, 0x03, 0x20)                   // PML4[0] = PDPT at 0x2000, present|writable
	a.emit(0xc7, 0x06, 0x00, 0x20, 0x03, 0x30)                   // PDPT[0] = PD at 0x3000
	a.emit(0xc7, 0x06, 0x00, 0x30, 0x83, 0x00)                   // PD[0] = 2 MiB page at 0, present|writable|large
	a.emit(0x0f, 0x01, 0x16)                                     // lgdt [gdtr]
	a.abs16("gdtr")
	a.emit(0x0f, 0x20, 0xe0, 0x66, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0)             // cr4 |= PAE
	a.emit(0x66, 0xb8, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x22, 0xd8)                   // cr3 = 0x1000
	a.emit(0x66, 0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32)                         // rdmsr EFER
	a.emit(0x66, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30)                         // EFER |= LME; wrmsr
	a.emit(0x0f, 0x20, 0xc0, 0x66, 0x0d, 0x01, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0) // cr0 |= PG|PE
	a.emit(0xea)                                                                   // jmp 0x08:long
	a.abs16("long")
	a.emit(0x08, 0x00)

	// 64-bit long mode.
	a.label("long")
	a.movALImm(probeStages[1])
	a.outImmAL(debugconPort)
	a.emit(0xb9) // mov ecx, n
	a.imm32(probeLoopIterations)
	a.label("spin")
	a.emit(0xff, 0xc9) // dec ecx
	a.jnz("spin")
	a.movALImm(probeStages[2])
	a.outImmAL(debugconPort)
	a.movALImm(probeExitValue)
	a.outImmAL(debugExitPort)
	a.label("halt")
	a.hlt()
	a.jmp("halt")

	a.align(8)
	a.label("gdt")
	a.emit(0, 0, 0, 0, 0, 0, 0, 0)                         // null descriptor
	a.emit(0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xaf, 0x00) // 0x08: 64-bit code, present, ring 0
	a.label("gdtr")
	a.emit(15, 0) // limit
	a.abs16("gdt")
	a.emit(0, 0) // base, upper half
	return a.sector()
}
