-- Argo CD health check for release.immutable.dev/ImmutableRelease.
-- Install it as resource.customizations.health.release.immutable.dev_ImmutableRelease in
-- argocd-cm (docs/guides/flux-and-argo.md). docs/argocd_health_test.go runs this file against
-- releases in every state.
local hs = { status = "Progressing", message = "Waiting for the operator to report status" }

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: nothing is fetched or applied"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local cond = {}
for _, c in ipairs(obj.status.conditions) do
  cond[c.type] = c
end
local function say(c)
  return c.reason .. ": " .. c.message
end

-- Stalled: retrying cannot help (an image not pinned, a failed health check, a quarantined
-- digest...). A person must change Git or the spec.
if cond.Stalled ~= nil and cond.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(cond.Stalled)
  return hs
end

local ready = cond.Ready
if ready == nil then
  return hs
end
-- A Ready condition written for an older spec says nothing about this one.
local observed = ready.observedGeneration or obj.status.observedGeneration or 0
if obj.metadata.generation ~= nil and observed < obj.metadata.generation then
  hs.message = "Waiting for the operator to reconcile generation " .. obj.metadata.generation
  return hs
end

if ready.status == "True" then
  -- Running the revert of a release that failed its health check: healthy workloads, but
  -- the release that was pushed did not ship. Degraded until a new commit is applied.
  local rb = obj.status.lastRollback
  local applied = obj.status.lastAppliedRevision or ""
  if rb ~= nil and rb.revertCommit ~= nil and string.sub(applied, -string.len(rb.revertCommit)) == rb.revertCommit then
    for _, h in ipairs(obj.status.history or {}) do
      if h.revision == rb.failedRevision and h.result == "Failed" then
        hs.status = "Degraded"
        hs.message = "RolledBack: revision " .. rb.failedRevision .. " failed and was reverted in Git by commit " ..
          rb.revertCommit .. "; push a fix to release again"
        return hs
      end
    end
  end
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

-- False: the last attempt failed (Git unreachable, a refused apply...); the operator
-- retries with backoff, and the message says what to fix. Unknown: rolling out.
if ready.status == "False" then
  hs.status = "Degraded"
end
hs.message = say(ready)
return hs
