package main

import "syscall"

// childSysProcAttr puts the connector in its own process group and has the kernel SIGTERM it if the
// runner dies without stopping it.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
