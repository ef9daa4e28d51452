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
	// probeMarker is written to debugcon: proof that guest code ran.
	probeMarker = 'K'
	// probeExitValue is written to isa-debug-exit; QEMU then exits with (value<<1)|1.
	probeExitValue    = 0x21
	probeExitCode     = probeExitValue<<1 | 1
	serialCOM1DataReg = 0x3f8
)

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
func (a *asm16) loop(label string)  { a.jump(0xe2, label) }
func (a *asm16) data(b ...byte)     { a.emit(b...) }

// movSILabel loads SI with the load address of a label.
func (a *asm16) movSILabel(label string) {
	a.emit(0xbe)
	a.fixups = append(a.fixups, fixup{at: len(a.code), label: label})
	a.emit(0, 0)
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

// probeBootSector writes probeMarker to debugcon, then probeExitValue to isa-debug-exit, which
// ends QEMU with probeExitCode. Should the exit device be missing, it halts forever.
func probeBootSector() ([]byte, error) {
	a := newAsm16()
	a.cli()
	a.movALImm(probeMarker)
	a.outImmAL(debugconPort)
	a.movALImm(probeExitValue)
	a.outImmAL(debugExitPort)
	a.label("halt")
	a.hlt()
	a.jmp("halt")
	return a.sector()
}
