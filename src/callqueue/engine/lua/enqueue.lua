-- enqueue: adds calls (one or a batch), idempotent on the call id.
-- KEYS[1] ready  KEYS[2] sched  KEYS[3] seq  KEYS[4] stats  KEYS[5] batch set (or the seq key
--   again when there is no batch)  KEYS[6] do-not-call set  KEYS[6+i] call key of the i-th call
-- ARGV[1] wake channel  ARGV[2] batch index ttl ms  ARGV[3] has_batch (0/1)  ARGV[4] batch id
-- ARGV[5] arrival sequence of the first call (0: take `ARGV[6]` numbers from the seq key here;
--   a bulk enqueue reserves its numbers with its first script, so its calls keep their input
--   order whichever of its scripts the server runs first)  ARGV[6] how many numbers to take
-- then 8 per call: id, spec json, priority rank, due ms (0: now), max_retries,
--   max duration s (0: the dialing worker's default), body hash, phone number (E.164)
-- Returns: {'ok', codes, first seq, status...}: codes has one letter per call, in order:
--   q created queued, s created scheduled, e exists (same body), c conflict (same id, other
--   body), d dnc (the number is on the do-not-call list: nothing is created); then, for each
--   e or c in order, the existing call's status. (Compact, because bulk replies of 1,000 calls
--   are built by the server and decoded by the client on the hot path.)
-- A new call's hash starts without the fields whose absence means their zero value: attempt
-- number `a` (0), `up` (= `cr`), `hn` (1 history line); priority is the high part of `q`.
local ready, sched, seqk, stats, batch = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local dnc = KEYS[6]
local channel, batch_ttl = ARGV[1], tonumber(ARGV[2])
local has_batch, batch_id = ARGV[3] == '1', ARGV[4]
local n = #KEYS - 6
local now = now_ms()
local seq = tonumber(ARGV[5])
if seq == 0 then
  local take = tonumber(ARGV[6])
  seq = redis.call('INCRBY', seqk, take) - take + 1
end
local first_seq = seq
-- Whether a wake-up helps: asked only when a call goes there (each check is a server call).
local sched_head
local wake = false
local codes, out = {}, {'ok', '', 0}
local new_ids = {}
local created = 0
-- One SMISMEMBER for the whole batch (in slices: unpack has a stack limit).
local listed = {}
for first = 1, n, 1000 do
  local phones = {}
  for i = first, math.min(n, first + 999) do phones[#phones + 1] = ARGV[6 + i * 8] end
  local got = redis.call('SMISMEMBER', dnc, unpack(phones))
  for j = 1, #got do listed[first + j - 1] = got[j] end
end
-- Fresh calls are the common case: one EXISTS over the batch spares a read per call.
local any_exist = false
for first = 7, #KEYS, 1000 do
  if redis.call('EXISTS', unpack(KEYS, first, math.min(#KEYS, first + 999))) > 0 then
    any_exist = true
    break
  end
end
local to_ready = {}  -- score, id, ...: one ZADD at the end
local seen = {}  -- ids created by this batch (the same id twice in one batch)
for i = 1, n do
  local key = KEYS[6 + i]
  local b = 6 + (i - 1) * 8
  local id, spec, prio, due = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local hash, phone = ARGV[b + 7], ARGV[b + 8]
  local existing = (any_exist or seen[id]) and redis.call('HMGET', key, 'st', 'h') or {}
  if existing[1] then
    codes[i] = (existing[2] == hash) and 'e' or 'c'
    out[#out + 1] = existing[1]
  elseif listed[i] == 1 then
    codes[i] = 'd'
  else
    local score = prio * 1099511627776 + seq + i - 1
    local status = (due > now) and 'scheduled' or 'queued'
    local fields = {'s', spec, 'st', status, 'q', score, 'mr', ARGV[b + 5], 'md', ARGV[b + 6],
      'cr', now, 'h', hash, 'to', phone, 'hist', now .. '|' .. status .. '|\n'}
    if has_batch then fields[19], fields[20] = 'b', batch_id end
    if status == 'scheduled' then
      fields[#fields + 1], fields[#fields + 2] = 'due', due
      redis.call('HSET', key, unpack(fields))
      if sched_head == nil then
        local head = redis.call('ZRANGE', sched, 0, 0, 'WITHSCORES')
        sched_head = head[2] and tonumber(head[2]) or false
      end
      redis.call('ZADD', sched, due, id)
      if not sched_head or due < sched_head then
        sched_head = due
        wake = true
      end
      codes[i] = 's'
    else
      redis.call('HSET', key, unpack(fields))
      to_ready[#to_ready + 1] = score
      to_ready[#to_ready + 1] = id
      codes[i] = 'q'
    end
    new_ids[#new_ids + 1] = id
    seen[id] = true
    created = created + 1
  end
end
if #to_ready > 0 then
  if redis.call('ZCARD', ready) == 0 then wake = true end
  for first = 1, #to_ready, 1000 do
    redis.call('ZADD', ready, unpack(to_ready, first, math.min(#to_ready, first + 999)))
  end
end
out[2] = table.concat(codes)
out[3] = first_seq
if created > 0 then redis.call('HINCRBY', stats, 'enqueued', created) end
if has_batch and #new_ids > 0 then
  for first = 1, #new_ids, 1000 do
    redis.call('SADD', batch, unpack(new_ids, first, math.min(#new_ids, first + 999)))
  end
end
if has_batch and batch_ttl > 0 then redis.call('PEXPIRE', batch, batch_ttl) end
if wake then redis.call('PUBLISH', channel, 'e') end
return out
