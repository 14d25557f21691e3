package agent

import (
	"crypto"
	"errors"
	"fmt"

	"github.com/attestd/attestd/internal/boundedfile"
	"github.com/attestd/attestd/measure"
)

// DefaultFirmwareLogPath is where Linux exposes the TPM's firmware event log
// (TCG PC Client format).
const DefaultFirmwareLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// ErrUnexplainedRegister: at a fresh start the agent register holds events
// that neither attestd's event log nor the firmware event log account for,
// so the daemon refuses to start.
var ErrUnexplainedRegister = errors.New("the register holds events nobody can account for")

func (a *Agent) firmwareLogPath() string {
	if a.opts.FirmwareLogPath != "" {
		return a.opts.FirmwareLogPath
	}
	return DefaultFirmwareLogPath
}

// prebootEvents returns the firmware log's events on the agent register if
// replaying them from zero gives current in every bank: then the register
// holds only what was measured before attestd started (systemd-stub's
// system extensions on PCR 13), none of attestd's own events.
func (a *Agent) prebootEvents(current map[crypto.Hash][]byte) ([]measure.PrebootMeasurement, error) {
	raw, err := boundedfile.Read(a.firmwareLogPath(), measure.MaxLogSize)
	if err != nil {
		return nil, fmt.Errorf("read firmware event log: %w", err)
	}
	return measure.PrebootFromTCGLog(raw, a.backend.Register(), current)
}

// recordPreboot puts the preboot events at the start of the empty log l.
// They are not extended: the register holds them already.
func (a *Agent) recordPreboot(l *measure.Log, pre []measure.PrebootMeasurement) error {
	for _, m := range pre {
		r, err := l.RecordPreboot(m)
		if err != nil {
			return err
		}
		a.log.Info("register held an event from before attestd: recorded from the firmware event log",
			"register", a.backend.Register().String(), "seq", r.Seq, "data", string(r.Data), "firmware_log", a.firmwareLogPath())
	}
	return nil
}

// unexplainedRegister is the refusal to start when the register is not zero,
// the event log is empty and the firmware log does not explain the register
// (cause says why).
func (a *Agent) unexplainedRegister(value []byte, logPath string, cause error) error {
	reg := a.backend.Register()
	advice := "reboot the environment"
	if reg.Kind == measure.PCR {
		advice = fmt.Sprintf("if something on this image measures into %s before attestd starts (systemd-stub measures <uki>.extra.d/*.raw system extensions into PCR 13), "+
			"run attestd on a free register instead (register: 14 or 15 in the config on the runner image; docs/reference-values.md, \"System extensions and PCR 13\"); otherwise reboot the environment", reg)
	}
	return fmt.Errorf("%w: %s is %x but the event log %s is empty and the firmware event log %s does not explain it (%w); %s",
		ErrUnexplainedRegister, reg, value, logPath, a.firmwareLogPath(), cause, advice)
}
