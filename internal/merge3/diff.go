package merge3

// maxEdits bounds the work of one diff: the search keeps a trace that grows with the square
// of the number of edits. Past it the differing middle is treated as replaced as a whole,
// which is still a correct diff, only not a minimal one (a merge may then see a conflict
// where a finer diff would not, never the reverse).
const maxEdits = 2048

// Match pairs the lines of x with lines of y along a longest common subsequence (Myers'
// O(ND) algorithm): m[i] is the index in y of the line matched with x[i], or -1. The
// matched indexes increase with i.
func Match(x, y []string) []int {
	m := make([]int, len(x))
	for i := range m {
		m[i] = -1
	}
	p := 0
	for p < len(x) && p < len(y) && x[p] == y[p] {
		m[p] = p
		p++
	}
	s := 0
	for s < len(x)-p && s < len(y)-p && x[len(x)-1-s] == y[len(y)-1-s] {
		m[len(x)-1-s] = len(y) - 1 - s
		s++
	}
	a, b := intern(x[p:len(x)-s], y[p:len(y)-s])
	myers(a, b, func(i, j int) { m[p+i] = p + j })
	return m
}

// intern numbers the distinct lines, so that comparing lines is comparing integers.
func intern(x, y []string) ([]int32, []int32) {
	ids := map[string]int32{}
	conv := func(lines []string) []int32 {
		out := make([]int32, len(lines))
		for i, l := range lines {
			id, ok := ids[l]
			if !ok {
				id = int32(len(ids))
				ids[l] = id
			}
			out[i] = id
		}
		return out
	}
	return conv(x), conv(y)
}

// myers calls match for each pair of a shortest edit script's common lines.
func myers(a, b []int32, match func(i, j int)) {
	n, m := len(a), len(b)
	if n == 0 || m == 0 {
		return
	}
	max := n + m
	off := max + 1
	v := make([]int32, 2*max+3)
	// trace[d] is v before step d, over the diagonals -d-1..d+1 that step d reads.
	var trace [][]int32
	for d := 0; d <= max && d <= maxEdits; d++ {
		trace = append(trace, append([]int32(nil), v[off-d-1:off+d+2]...))
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = int(v[off+k+1])
			} else {
				x = int(v[off+k-1]) + 1
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x, y = x+1, y+1
			}
			v[off+k] = int32(x)
			if x >= n && y >= m {
				backtrack(trace, n, m, match)
				return
			}
		}
	}
}

func backtrack(trace [][]int32, x, y int, match func(i, j int)) {
	for d := len(trace) - 1; d >= 0; d-- {
		v := trace[d]
		at := func(k int) int { return int(v[k+d+1]) }
		k := x - y
		var prevK int
		if k == -d || (k != d && at(k-1) < at(k+1)) {
			prevK = k + 1
		} else {
			prevK = k - 1
		}
		prevX := at(prevK)
		prevY := prevX - prevK
		for x > prevX && y > prevY {
			x, y = x-1, y-1
			match(x, y)
		}
		if d > 0 {
			x, y = prevX, prevY
		}
	}
}
