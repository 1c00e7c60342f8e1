//go:build tools

// Pins the cert-manager library this module builds its controller from (see main.go).
package main

import _ "github.com/cert-manager/cert-manager/pkg/controller"
