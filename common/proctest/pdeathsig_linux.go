package proctest

import "syscall"

// dieWithParent makes the kernel kill the child when the test binary dies (panic, timeout), so no
// broker is left running.
func dieWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
