//go:build unix && !linux

package main

import "syscall"

// childSysProcAttr puts the connector in its own process group.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
