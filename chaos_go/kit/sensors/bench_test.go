package sensors

import "testing"

func BenchmarkCollect(b *testing.B) {
	c := Default([]string{"/srv/x"})
	for i := 0; i < b.N; i++ {
		Collect(c)
	}
}

func BenchmarkPrograms(b *testing.B) {
	c := Default(nil)
	for i := 0; i < b.N; i++ {
		Programs(c, []Tool{{"systemctl", "/usr/bin/systemctl"}})
	}
}
