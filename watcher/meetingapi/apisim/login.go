package apisim

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	// AppAuthPath is the App ID login: an HMAC-SHA256 signature over the
	// request, keyed with the app key, in the Authorization header.
	AppAuthPath = "/v2/usg/acs/auth/appauth"
	// AccountAuthPath is the account login, with HTTP Basic credentials.
	AccountAuthPath = "/v1/usg/acs/auth/account"
	// ClientType is the clientType a login must send: 72 is the API's
	// client type for third-party integrations, the one the simulator
	// serves.
	ClientType = 72
	// MaxTokensPerUser is how many tokens one user holds at once. As on the
	// real API, the next login evicts that user's oldest token, so a client
	// that logs in too often breaks its own earlier sessions.
	MaxTokensPerUser = 64
	// DefaultTokenTTL is the lifetime of an issued token when
	// Options.TokenTTL is 0: the shortest the API documents.
	DefaultTokenTTL = 12 * time.Hour
	// refreshTTL is the lifetime the simulator claims for refresh tokens. It
	// never accepts them; the field is there because the real answer has it.
	refreshTTL = 30 * 24 * time.Hour
	// maxLoginBody caps a login request's body, which is a few hundred bytes
	// when well formed.
	maxLoginBody = 64 << 10
)

// The simulator refuses every login with 401 and CodeInvalidToken, the one
// authentication code Huawei documents, because the reference does not say
// which code a bad signature or password gets. Its error_msg says what was
// wrong, without ever repeating a credential, so a failing test explains
// itself.

// loginBody is the JSON body of either login; the account login uses only
// Account and ClientType.
type loginBody struct {
	AppID      string `json:"appId"`
	ClientType int    `json:"clientType"`
	ExpireTime int64  `json:"expireTime"`
	Nonce      string `json:"nonce"`
	UserID     string `json:"userId"`
	CorpID     string `json:"corpId"`
	Account    string `json:"account"`
}

// appAuth answers an App ID login.
func (s *Sim) appAuth(r *http.Request, reqID string) response {
	body, refused := readLoginBody(r, reqID)
	if refused != nil {
		return *refused
	}
	if msg := s.checkAppAuth(r.Header.Get("Authorization"), body); msg != "" {
		return loginRefused(msg, reqID)
	}
	user := "app:" + body.AppID + ":" + body.CorpID + ":" + body.UserID
	return s.issue(user, map[string]any{
		"appId":     body.AppID,
		"userId":    body.UserID,
		"corpId":    body.CorpID,
		"adminType": adminType(body.UserID == ""),
	}, reqID)
}

// checkAppAuth returns why an App ID login is refused, or "" if it is not.
func (s *Sim) checkAppAuth(authz string, body loginBody) string {
	sig, access, ok := parseHMACAuth(authz)
	if !ok {
		return "Authorization must be HMAC-SHA256 signature=<hex>,access=<base64 appId>."
	}
	appID, err := base64.StdEncoding.DecodeString(access)
	switch {
	case err != nil:
		return "The access in Authorization is not base64."
	case s.opts.AppID == "" || string(appID) != s.opts.AppID:
		return "The app ID is unknown."
	case body.AppID != s.opts.AppID:
		return "The appId in the body does not match the access in Authorization."
	case body.ClientType != ClientType:
		return "clientType must be " + strconv.Itoa(ClientType) + "."
	case len(body.Nonce) < 32 || len(body.Nonce) > 64:
		return "nonce must have 32 to 64 characters."
	case body.ExpireTime != 0 && body.ExpireTime <= s.now().Unix():
		return "The signature has expired (expireTime is in the past)."
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return "The signature in Authorization is not hex."
	}
	if !hmac.Equal(got, sign(s.opts.AppKey, body.AppID, body.CorpID, body.UserID, body.ExpireTime, body.Nonce)) {
		return "The signature does not match."
	}
	return ""
}

// sign returns the HMAC-SHA256 that the App ID login expects, keyed with
// appKey, over "appId:userId:expireTime:nonce", or
// "appId:corpId:userId:expireTime:nonce" when corpID is not empty. An empty
// userID (the enterprise administrator) keeps its colons.
func sign(appKey, appID, corpID, userID string, expireTime int64, nonce string) []byte {
	parts := []string{appID}
	if corpID != "" {
		parts = append(parts, corpID)
	}
	parts = append(parts, userID, strconv.FormatInt(expireTime, 10), nonce)
	mac := hmac.New(sha256.New, []byte(appKey))
	mac.Write([]byte(strings.Join(parts, ":")))
	return mac.Sum(nil)
}

// parseHMACAuth splits "HMAC-SHA256 signature=<sig>,access=<access>". The
// two parameters may come in either order, with spaces after the comma.
func parseHMACAuth(h string) (sig, access string, ok bool) {
	rest, found := strings.CutPrefix(h, "HMAC-SHA256 ")
	if !found {
		return "", "", false
	}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, found := strings.Cut(strings.TrimSpace(part), "=")
		if !found {
			return "", "", false
		}
		switch k {
		case "signature":
			sig = v
		case "access":
			access = v
		default:
			return "", "", false
		}
	}
	return sig, access, sig != "" && access != ""
}

// accountAuth answers an account login.
func (s *Sim) accountAuth(r *http.Request, reqID string) response {
	body, refused := readLoginBody(r, reqID)
	if refused != nil {
		return *refused
	}
	account, password, ok := r.BasicAuth()
	switch {
	case !ok:
		return loginRefused("Authorization must be Basic base64(account:password).", reqID)
	case s.opts.Account == "" || !equal(account, s.opts.Account) || !equal(password, s.opts.Password):
		return loginRefused("The account or password is incorrect.", reqID)
	case body.Account != account:
		return loginRefused("The account in the body does not match Authorization.", reqID)
	case body.ClientType != ClientType:
		return loginRefused("clientType must be "+strconv.Itoa(ClientType)+".", reqID)
	}
	return s.issue("account:"+account, map[string]any{
		"account":   account,
		"adminType": adminType(true),
	}, reqID)
}

// equal compares credentials in constant time, as a real server must; the
// simulator does too, so that it is not a bad example.
func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// adminType is the user's role in the answer: 1 for an enterprise
// administrator, 2 for an ordinary user.
func adminType(admin bool) int {
	if admin {
		return 1
	}
	return 2
}

// readLoginBody reads a login request, or returns the answer that refuses
// it: a method other than POST, or a body that is not a JSON login.
func readLoginBody(r *http.Request, reqID string) (loginBody, *response) {
	if r.Method != http.MethodPost {
		refused := apiError(http.StatusMethodNotAllowed, CodeNoSuchAPI, "Method "+r.Method+" is not allowed.", reqID)
		return loginBody{}, &refused
	}
	var body loginBody
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxLoginBody)).Decode(&body); err != nil {
		refused := loginRefused("The body is not a JSON login request.", reqID)
		return loginBody{}, &refused
	}
	return body, nil
}

func loginRefused(msg, reqID string) response {
	return apiError(http.StatusUnauthorized, CodeInvalidToken, msg, reqID)
}

// issue stores a new token for user, evicting the user's oldest beyond
// MaxTokensPerUser, and answers it. extra is merged into the answer's user
// object.
func (s *Sim) issue(user string, extra map[string]any, reqID string) response {
	now := s.now()
	ttl := s.opts.TokenTTL
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	tok := randomToken()
	s.mu.Lock()
	s.tokens[tok] = now.Add(ttl)
	held := append(s.slots[user], tok)
	if len(held) > MaxTokensPerUser {
		for _, old := range held[:len(held)-MaxTokensPerUser] {
			delete(s.tokens, old)
		}
		held = held[len(held)-MaxTokensPerUser:]
	}
	s.slots[user] = held
	s.logins++
	s.mu.Unlock()

	u := map[string]any{
		"userUUID": s.opts.AdminUserUUID,
		"name":     "admin",
	}
	for k, v := range extra {
		u[k] = v
	}
	body, err := json.Marshal(map[string]any{
		"accessToken":        tok,
		"tokenIp":            "127.0.0.1",
		"validPeriod":        int64(ttl / time.Second),
		"expireTime":         now.Add(ttl).Unix(),
		"createTime":         now.UnixMilli(),
		"refreshToken":       randomToken(),
		"refreshValidPeriod": int64(refreshTTL / time.Second),
		"refreshExpireTime":  now.Add(refreshTTL).Unix(),
		"clientType":         ClientType,
		"user":               u,
	})
	if err != nil {
		return apiError(http.StatusInternalServerError, CodeServerError, fmt.Sprintf("encoding the token: %v", err), reqID)
	}
	return response{status: http.StatusOK, contentType: jsonType, body: body}
}

// randomToken returns an unguessable token. It does not come from the
// seeded generator, so logging in does not change the records a seed
// generates.
func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return "stb" + hex.EncodeToString(b)
}

// tokenValid reports whether the listing accepts tok: an issued token until
// it expires, Options.Token, or any token when no token is under test.
func (s *Sim) tokenValid(tok string) bool {
	if tok == "" || s.refuseAll {
		return false
	}
	now := s.now()
	s.mu.Lock()
	exp, issued := s.tokens[tok]
	s.mu.Unlock()
	switch {
	case issued:
		return now.Before(exp)
	case s.opts.Token != "":
		return tok == s.opts.Token
	default:
		return s.opts.AppID == "" && s.opts.Account == ""
	}
}

// Logins returns how many logins succeeded, so tests can check that a
// client shares and caches its token instead of logging in per request.
func (s *Sim) Logins() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

// ExpireTokens makes every token issued so far expire now, as if their
// lifetime had passed, so the next listing with one gets 401
// USG.000000004. Options.Token is not affected, and later logins issue
// fresh tokens.
func (s *Sim) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok := range s.tokens {
		s.tokens[tok] = time.Time{}
	}
}
